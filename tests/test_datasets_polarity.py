"""The review polarity loader: the real archive (when present) and a tiny fixture."""

import io
import tarfile

import numpy as np
import pytest

from diffsc.datasets import ReviewPolarity, load_review_polarity
from diffsc.datasets.polarity import SHA256


@pytest.fixture(scope="module")
def real():
    """The published archive from $DIFFSC_DATA, or a skip naming what is missing."""
    try:
        return load_review_polarity()
    except FileNotFoundError as err:
        pytest.skip(str(err))


def test_real_counts(real):
    assert len(real) == len(real.texts) == len(real.names) == 2000
    assert real.labels.dtype == np.int64 and real.folds.dtype == np.int64
    assert np.bincount(real.labels).tolist() == [1000, 1000]
    assert np.bincount(real.folds).tolist() == [200] * 10
    for fold in range(10):
        assert np.bincount(real.labels[real.folds == fold]).tolist() == [100, 100]


def test_real_folds_follow_the_readme(real):
    # poldata.README.2.0: "neg/cv114_19501.txt ... served as a member of fold 2" (1-based).
    index = real.names.index("txt_sentoken/neg/cv114_19501.txt")
    assert real.folds[index] == 1 and real.labels[index] == 0
    assert real.names == sorted(real.names)
    assert all(text.strip() and text == text.lower() for text in real.texts)
    train, test = real.split(3)
    assert len(train) == 1800 and len(test) == 200
    assert set(train).isdisjoint(test) and (real.folds[test] == 3).all()


def _write_fixture(root, members):
    folder = root / "review-polarity"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "review_polarity.tar.gz", "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return folder / "review_polarity.tar.gz"


FIXTURE = {
    "poldata.README.2.0": "folds by file prefix\n",
    "txt_sentoken/pos/cv912_5562.txt": "a fine film .\n",
    "txt_sentoken/neg/cv000_29416.txt": "a dull film .\nvery dull .\n",
    "txt_sentoken/pos/cv000_29590.txt": "great !\n",
    "txt_sentoken/neg/cv114_19501.txt": "bad .\n",
    "txt_sentoken/neg/notes.txt": "not a review\n",
}


def test_fixture_parsed(tmp_path):
    _write_fixture(tmp_path, FIXTURE)
    data = load_review_polarity(tmp_path, verify=False)
    assert isinstance(data, ReviewPolarity)
    assert data.names == [
        "txt_sentoken/neg/cv000_29416.txt",
        "txt_sentoken/neg/cv114_19501.txt",
        "txt_sentoken/pos/cv000_29590.txt",
        "txt_sentoken/pos/cv912_5562.txt",
    ]
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert data.folds.tolist() == [0, 1, 0, 9]
    assert data.texts[0] == "a dull film .\nvery dull .\n"
    train, test = data.split(0)
    assert train.tolist() == [1, 3] and test.tolist() == [0, 2]


def test_bad_fold(tmp_path):
    _write_fixture(tmp_path, FIXTURE)
    data = load_review_polarity(tmp_path, verify=False)
    with pytest.raises(ValueError, match=r"fold: must be an integer in 0\.\.9, got 10"):
        data.split(10)


def test_checksum_mismatch(tmp_path):
    path = _write_fixture(tmp_path, FIXTURE)
    with pytest.raises(ValueError, match="checksum mismatch") as err:
        load_review_polarity(tmp_path)
    message = str(err.value)
    assert str(path) in message and f"expected {SHA256}" in message
    assert "http://www.cs.cornell.edu/people/pabo/movie-review-data/" in message


def test_missing_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="review_polarity.tar.gz is missing; get it from") as err:
        load_review_polarity(tmp_path)
    assert "http://www.cs.cornell.edu/people/pabo/movie-review-data/" in str(err.value)


def test_missing_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFSC_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="no data directory: pass data_dir=... or set"):
        load_review_polarity()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_review_polarity(tmp_path / "nowhere")


def test_archive_without_reviews(tmp_path):
    _write_fixture(tmp_path, {"poldata.README.2.0": "nothing else\n"})
    with pytest.raises(ValueError, match=r"holds no txt_sentoken/\{pos,neg\}/cv\*\.txt reviews"):
        load_review_polarity(tmp_path, verify=False)
