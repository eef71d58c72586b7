"""MNIST and audio loaders: the real files (skipped when absent) and tiny fixtures.

The real-data tests read the directory named by ``DIFFSC_DATA`` only; without
it they skip with the loader's own message (which says how to get the data).
"""

import gzip
import hashlib

import numpy as np
import pytest
import soundfile

from diffsc.datasets import (
    Clip,
    audio_features,
    data_dir,
    load_audio_folder,
    load_gtzan,
    load_mnist,
    snippet_spectra,
)
from diffsc.datasets import audio, mnist


def _real(loader, *args, **kwargs):
    """``loader(*args, **kwargs)``, or a skip with its missing-file message."""
    try:
        return loader(*args, **kwargs)
    except FileNotFoundError as err:
        pytest.skip(str(err))


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mnist_test():
    return _real(load_mnist, "test")


def test_mnist_test_split(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10000, 784) and images.dtype == np.float64
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    # pixel / 255: every value is a multiple of 1/255
    np.testing.assert_allclose(images[:100] * 255, np.round(images[:100] * 255), atol=1e-9)
    np.testing.assert_array_equal(labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(
        np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )


def test_mnist_train_split():
    images, labels = _real(load_mnist, "train")
    assert images.shape == (60000, 784) and labels.shape == (60000,)
    np.testing.assert_array_equal(labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(
        np.bincount(labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )


@pytest.fixture(scope="module")
def gtzan():
    return _real(load_gtzan, progress=False)


def test_gtzan_clips(gtzan):
    assert len(gtzan) == 100
    labels = [clip.label for clip in gtzan]
    assert sorted(set(labels)) == list(audio.GTZAN_GENRES)
    assert all(labels.count(genre) == 10 for genre in audio.GTZAN_GENRES)
    assert [clip.name for clip in gtzan[:2]] == ["blues.00000.wav", "blues.00001.wav"]
    assert all(clip.sample_rate == 22050 for clip in gtzan)
    assert all(clip.signal.dtype == np.float32 and clip.signal.ndim == 1 for clip in gtzan)
    assert all(15 <= clip.duration <= 20 for clip in gtzan)
    assert [len(clip.signal) for clip in gtzan] == [audio.GTZAN_FRAMES[clip.name] for clip in gtzan]


def test_gtzan_features_of_one_clip(gtzan):
    clip = gtzan[0]
    X, labels, clip_index = audio_features([clip], progress=False)
    # 1102 samples per 50 ms snippet at 22,050 Hz; no silent snippet in this clip
    assert X.shape == (len(clip.signal) // 1102, 128) and X.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0)
    assert (X >= 0).all()
    assert set(labels) == {"blues"} and (clip_index == 0).all()


# ------------------------------------------------------------ data directory


def test_data_dir_needs_an_argument_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFSC_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="pass data_dir=... or set the environment variable DIFFSC_DATA"):
        data_dir()
    with pytest.raises(FileNotFoundError, match="pass data_dir=... or set the environment variable DIFFSC_DATA"):
        load_mnist("test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("DIFFSC_DATA", str(tmp_path))
    assert data_dir() == tmp_path


# ------------------------------------------------------------- MNIST fixture


def _idx(magic, array):
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny_mnist(tmp_path):
    """3 images of 2 x 2 pixels in the test split's file names."""
    images = np.arange(12, dtype=np.uint8).reshape(3, 2, 2) * 20 + 15
    labels = np.array([3, 1, 4], dtype=np.uint8)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, content in [
        ("t10k-images-idx3-ubyte.gz", _idx(2051, images)),
        ("t10k-labels-idx1-ubyte.gz", _idx(2049, labels)),
    ]:
        with gzip.open(folder / name, "wb") as f:
            f.write(content)
    return tmp_path, images, labels


def test_mnist_reads_idx(tiny_mnist):
    root, images, labels = tiny_mnist
    X, y = load_mnist("test", data_dir=root, verify=False)
    assert X.shape == (3, 4) and X.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(X, images.reshape(3, 4) / 255.0)
    np.testing.assert_array_equal(y, labels)


def test_mnist_verified_against_the_uncompressed_checksum(tiny_mnist, monkeypatch):
    root, _, _ = tiny_mnist
    with pytest.raises(ValueError, match=r"checksum mismatch .*yann\.lecun\.com.*uncompressed content"):
        load_mnist("test", data_dir=root)
    # with the fixture's own uncompressed checksums it passes, and is then cached
    for name in mnist.FILES["test"]:
        with gzip.open(root / "mnist" / name, "rb") as f:
            monkeypatch.setitem(mnist.SHA256, name, hashlib.sha256(f.read()).hexdigest())
    load_mnist("test", data_dir=root)
    assert any(key[0].endswith("t10k-images-idx3-ubyte.gz") for key in mnist._VERIFIED)


def test_mnist_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"t10k-images-idx3-ubyte\.gz is missing; get it from .*http://yann\.lecun\.com/exdb/mnist/",
    ):
        load_mnist("test", data_dir=tmp_path)


def test_mnist_bad_files(tiny_mnist):
    root, images, labels = tiny_mnist
    folder = root / "mnist"
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        load_mnist("valid", data_dir=root)

    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx(2051, labels))
    with pytest.raises(ValueError, match=r"bad IDX magic number 2051 \(expected 2049"):
        load_mnist("test", data_dir=root, verify=False)

    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx(2049, labels)[:-1])
    with pytest.raises(ValueError, match=r"shape \(3,\), i.e. 3 bytes of data, but the file holds 2"):
        load_mnist("test", data_dir=root, verify=False)

    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx(2049, labels[:2]))
    with pytest.raises(ValueError, match="holds 3 images but .* holds 2 labels"):
        load_mnist("test", data_dir=root, verify=False)

    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08")
    with pytest.raises(ValueError, match="3 bytes is too short for an IDX header of 8 bytes"):
        load_mnist("test", data_dir=root, verify=False)

    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(2049, labels))  # not gzipped
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte\.gz is not a readable gzip file .*download it again"):
        load_mnist("test", data_dir=root, verify=False)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(2051, images))  # checked first
    with pytest.raises(ValueError, match=r"images-idx3-ubyte\.gz is not a readable gzip file .*download it again"):
        load_mnist("test", data_dir=root)


# ------------------------------------------------------------- audio fixture

RATE = 8000  # 50 ms = 400 samples exactly; bins 20 Hz apart


def _sine(hz, seconds, rate=RATE, amplitude=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _write(path, signal, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, signal, rate, subtype="PCM_16")


def test_gtzan_naming(tmp_path):
    _write(tmp_path / "rock.00001.wav", _sine(440, 0.3))
    _write(tmp_path / "jazz.00000.wav", _sine(880, 0.2))
    _write(tmp_path / "blues.00007.WAV", _sine(220, 0.1))
    (tmp_path / "notes.txt").write_text("not audio")
    clips = load_audio_folder(tmp_path, progress=False)
    assert [(c.name, c.label) for c in clips] == [
        ("blues.00007.WAV", "blues"),
        ("jazz.00000.wav", "jazz"),
        ("rock.00001.wav", "rock"),
    ]
    assert [len(c.signal) for c in clips] == [800, 1600, 2400]
    assert all(c.sample_rate == RATE and c.signal.dtype == np.float32 for c in clips)
    np.testing.assert_allclose(clips[2].signal, _sine(440, 0.3), atol=1 / 2**15)
    assert clips[1].duration == pytest.approx(0.2)


def test_subfolder_naming_and_stereo(tmp_path):
    left, right = _sine(440, 0.1, amplitude=0.6), _sine(440, 0.1, amplitude=0.2)
    _write(tmp_path / "speech" / "take2.wav", np.stack([left, right], axis=1))
    _write(tmp_path / "music" / "b.wav", _sine(440, 0.1))
    _write(tmp_path / "music" / "a.wav", _sine(440, 0.1))
    clips = load_audio_folder(tmp_path, progress=False)
    assert [(c.name, c.label) for c in clips] == [
        ("music/a.wav", "music"),
        ("music/b.wav", "music"),
        ("speech/take2.wav", "speech"),
    ]
    assert clips[2].signal.ndim == 1
    np.testing.assert_allclose(clips[2].signal, (left + right) / 2, atol=1 / 2**15)


def test_checksums(tmp_path):
    _write(tmp_path / "a.0.wav", _sine(440, 0.1))
    _write(tmp_path / "b.0.wav", _sine(440, 0.1))
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert len(load_audio_folder(tmp_path, checksums=digest, progress=False)) == 2
    with pytest.raises(ValueError, match=r"b\.0\.wav: checksum mismatch \(sha256 [0-9a-f]{64}, expected 00\)"):
        load_audio_folder(tmp_path, checksums={**digest, "b.0.wav": "00"}, progress=False)
    with pytest.raises(FileNotFoundError, match=r"1 of the 3 files are missing from .*: c\.0\.wav"):
        load_audio_folder(tmp_path, checksums={**digest, "c.0.wav": "00"}, progress=False)
    with pytest.raises(ValueError, match=r"not part of the data set: b\.0\.wav; remove them"):
        load_audio_folder(tmp_path, checksums={"a.0.wav": digest["a.0.wav"]}, progress=False)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio folder .*nowhere does not exist"):
        load_audio_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="audio folder .* is empty"):
        load_audio_folder(tmp_path)
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(FileNotFoundError, match=r"no \.wav files in .*expected <label>\.<id>\.wav files, or one sub-folder"):
        load_audio_folder(tmp_path)
    (tmp_path / "broken.0.wav").write_bytes(b"RIFF but not really a wav file")
    with pytest.raises(ValueError, match=r"broken\.0\.wav: cannot decode it as audio"):
        load_audio_folder(tmp_path, progress=False)
    (tmp_path / "broken.0.wav").unlink()
    _write(tmp_path / "nolabel.wav", _sine(440, 0.1))
    with pytest.raises(ValueError, match=r"nolabel\.wav: a WAV file directly in the folder must be named <label>\.<id>\.wav"):
        load_audio_folder(tmp_path, progress=False)
    (tmp_path / "nolabel.wav").rename(tmp_path / "x.1.wav")
    _write(tmp_path / "pop" / "a.wav", _sine(440, 0.1))
    with pytest.raises(ValueError, match="mixes <label>.<id>.wav files with label sub-folders"):
        load_audio_folder(tmp_path, progress=False)


def test_gtzan_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"gtzan-10x10 is missing; get it from http://marsyas\.info/downloads/datasets\.html",
    ):
        load_gtzan(tmp_path)
    _write(tmp_path / "gtzan-10x10" / "blues.00000.wav", _sine(440, 0.1))
    with pytest.raises(
        FileNotFoundError,
        match=r"99 of the 100 files are missing .*blues\.00001\.wav.*get them from http://marsyas",
    ):
        load_gtzan(tmp_path)


def test_gtzan_table():
    assert len(audio.GTZAN_SHA256) == 100
    assert sorted(audio.GTZAN_SHA256) == [f"{g}.{i:05d}.wav" for g in audio.GTZAN_GENRES for i in range(10)]
    assert sum(audio.GTZAN_FRAMES.values()) / 22050 == pytest.approx(1746.86, abs=0.01)


def test_progress_bar_on_stderr(tmp_path, capsys):
    _write(tmp_path / "a.0.wav", _sine(440, 0.1))
    load_audio_folder(tmp_path, progress=True)
    assert "decoding" in capsys.readouterr().err
    load_audio_folder(tmp_path, progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------- snippet spectra


@pytest.mark.parametrize("hz, n_bands, rate, band", [(1040, 40, 8000, 10), (1000, 128, 22050, 11), (3000, 128, 22050, 34)])
def test_sine_energy_in_its_band(hz, n_bands, rate, band):
    spectra = snippet_spectra(_sine(hz, 1.0, rate=rate), rate, n_bands=n_bands)
    assert spectra.shape == (20, n_bands)
    assert (spectra.argmax(axis=1) == band).all()
    # band = floor(f * n_bands / nyquist)
    assert band == int(hz * n_bands / (rate / 2))
    if rate == 8000:  # bin-aligned: the Hann main lobe (3 bins) lies inside one band
        assert spectra[:, band].min() > 0.999


def test_snippet_count_and_unit_norms():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(RATE * 2 + 399)  # 2.04 s: 40 whole snippets and a partial one
    spectra = snippet_spectra(signal, RATE)
    assert spectra.shape == (40, 128) and spectra.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(spectra, axis=1), 1.0, rtol=1e-12)
    assert snippet_spectra(signal[:399], RATE).shape == (0, 128)
    # loudness does not matter
    np.testing.assert_allclose(snippet_spectra(1e-3 * signal, RATE), spectra, rtol=1e-9)
    # 22,050 Hz: 1102-sample snippets; 1 s holds 20
    assert snippet_spectra(rng.standard_normal(22050), 22050).shape == (20, 128)


def test_silent_snippets_dropped():
    tone = _sine(440, 0.05)
    signal = np.concatenate([tone, np.zeros(800, np.float32), tone, np.zeros(400, np.float32)])
    spectra = snippet_spectra(signal, RATE, n_bands=16)
    assert spectra.shape == (2, 16)
    np.testing.assert_allclose(spectra[0], spectra[1])
    assert snippet_spectra(np.zeros(4000), RATE).shape == (0, 128)


def test_max_hz_pools_only_the_low_bins():
    spectra = snippet_spectra(_sine(1040, 0.1), RATE, n_bands=20, max_hz=2000)
    assert (spectra.argmax(axis=1) == 10).all()  # 100 Hz bands: 1040 Hz in band 10
    high = snippet_spectra(_sine(3000, 0.1) + _sine(1040, 0.1, amplitude=0.01), RATE, n_bands=20, max_hz=2000)
    assert (high.argmax(axis=1) == 10).all()  # the 3 kHz tone lies above max_hz


def test_snippet_spectra_errors():
    with pytest.raises(ValueError, match=r"signal must be one-dimensional \(mono\), got shape \(10, 2\)"):
        snippet_spectra(np.zeros((10, 2)), RATE)
    with pytest.raises(ValueError, match="sample_rate must be a positive integer, got 0"):
        snippet_spectra(np.zeros(10), 0)
    with pytest.raises(ValueError, match=r"snippet_ms=0.1 gives 0 sample\(s\) at 8000 Hz; need at least 2"):
        snippet_spectra(np.zeros(10), RATE, snippet_ms=0.1)
    with pytest.raises(ValueError, match=r"max_hz must be in \(0, 4000.0\]"):
        snippet_spectra(np.zeros(10), RATE, max_hz=5000)
    with pytest.raises(ValueError, match="n_bands=300 leaves bands without an FFT bin: a 400-sample snippet has 201 bins"):
        snippet_spectra(np.zeros(10), RATE, n_bands=300)
    with pytest.raises(ValueError, match="n_bands must be a positive integer, got 0"):
        snippet_spectra(np.zeros(10), RATE, n_bands=0)


def test_audio_features_stacks_clips():
    clips = [
        Clip(_sine(440, 0.2), RATE, "a", "a.0.wav"),
        Clip(np.zeros(800, np.float32), RATE, "b", "b.0.wav"),  # silent: no rows
        Clip(_sine(880, 0.15), RATE, "c", "c.0.wav"),
    ]
    X, labels, clip_index = audio_features(clips, n_bands=32, progress=False)
    assert X.shape == (7, 32)
    np.testing.assert_array_equal(labels, ["a"] * 4 + ["c"] * 3)
    np.testing.assert_array_equal(clip_index, [0, 0, 0, 0, 2, 2, 2])
    assert clip_index.dtype == np.int64
    np.testing.assert_allclose(X[:4], snippet_spectra(clips[0].signal, RATE, n_bands=32))

    X, labels, clip_index = audio_features([], n_bands=32, progress=False)
    assert X.shape == (0, 32) and labels.shape == (0,) and clip_index.shape == (0,)

    with pytest.raises(ValueError, match=r"different sample rates \[8000, 16000\]; pass max_hz"):
        audio_features([clips[0], Clip(_sine(440, 0.2, rate=16000), 16000, "d", "d.0.wav")], progress=False)
    X, _, _ = audio_features(
        [clips[0], Clip(_sine(440, 0.2, rate=16000), 16000, "d", "d.0.wav")], n_bands=32, max_hz=4000, progress=False
    )
    assert X.shape == (8, 32)
    np.testing.assert_allclose(X[0], X[-1], atol=0.05)  # same tone, same bands
