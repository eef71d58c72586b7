#!/usr/bin/env bash
# Issue 5's GPU tables, sized for a short lease (each step has its own time
# limit, so one slow step cannot take the rest):
#   bash benchmarks/gpu.sh OUT            # CUDA tests, flops.py (N = 10,000 and 100,000),
#                                         # codes.py kl (one process per size)
#   bash benchmarks/gpu.sh OUT softmax,backward   # softmax: also robustness.py's L1 sweep (small
#                                         # problems) with proximal Newton and the active set
#   bash benchmarks/gpu.sh OUT l1         # scikit-learn's rows skipped (lasso_lars alone takes
#                                         # ~20 min); SPAMS runs if importable: the device image has
#                                         # none, carry the spams-bin wheel (.library/device/README.md)
#   bash benchmarks/gpu.sh OUT learning   # learning.py --device cuda; MNIST from $DIFFSC_DATA,
#                                         # by default .data (git ignores it: copy the two train-*
#                                         # files of ../shared/data/mnist to .data/mnist and carry .data)
# flops.py times Newton-CG's default rows at once (on a GPU, as many as a
# quarter of its free memory holds) against 512 and 100,000; the peers
# scikit-learn, SPAMS and scipy run on the CPU.
set -u
out=${1:?out directory}
sections=${2:-kl}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numba, scipy, sklearn; print('torch', torch.__version__, 'numba', numba.__version__,
'scipy', scipy.__version__, 'scikit-learn', sklearn.__version__)"
codes="python3 benchmarks/codes.py --device cuda --no-factored --eg-budget 10"
if [ "$sections" = kl ]; then
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
    timeout 120 python3 benchmarks/flops.py --device cuda --rows auto,512 --out "$out"
    timeout 100 python3 benchmarks/flops.py --device cuda --rows auto,100000 --n 100000 --sizes 64x256,784x256 \
        --priors kl --out "$out/n100000"
    for size in 64x256 64x512 784x256; do
        timeout 110 $codes --only kl --kl-sizes $size --out "$out/kl-$size"
    done
elif [ "$sections" = learning ]; then
    DIFFSC_DATA=${DIFFSC_DATA:-$PWD/.data} timeout 500 python3 benchmarks/learning.py --device cuda --out "$out"
else
    skip=""
    case ",$sections," in *,l1,*) skip="--skip lasso_lars,lasso_cd" ;; esac
    timeout 420 $codes --only "$sections" $skip --out "$out"
    case ",$sections," in *,softmax,*)
        for solver in prox_newton active_set; do
            timeout 120 python3 benchmarks/robustness.py --priors l1 --seeds 5 --device cuda --solver $solver \
                | tee "$out/robustness-l1-$solver.txt"
        done ;;
    esac
fi
