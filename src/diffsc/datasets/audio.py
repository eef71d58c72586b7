"""Labelled audio clips (GTZAN and folders like it) and their snippet spectra.

Appendix E of the paper: "each song was divided into 50ms snippets, and the
magnitude of the spectrogram for each snippet were used as input examples";
:func:`snippet_spectra` computes those inputs, :func:`audio_features` stacks
them over a list of clips.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from tqdm.auto import tqdm

from . import _files

GTZAN_FOLDER = "gtzan-10x10"
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_SOURCE = (
    "http://marsyas.info/downloads/datasets.html (GTZAN; also on Kaggle as "
    '"GTZAN dataset music genre classification"); this subset is the first 15-20 s of clips '
    "00000-00009 of each of the 10 genres, as 16-bit PCM mono WAV at 22,050 Hz: of each original "
    "clip keep the number of frames given in diffsc.datasets.audio.GTZAN_FRAMES"
)

# `<label>.<id>.wav`, e.g. `blues.00042.wav`.
_GTZAN_NAME = re.compile(r"^(?P<label>[^.]+)\.[^.]+\.wav$", re.IGNORECASE)

# Digital silence in a 16-bit recording is exact zeros, and its quietest
# sound (one step, 2**-15 of full scale) is still ~1e-5 of a typical loud
# snippet; 1e-8 of the loudest snippet thus drops only silence, whose
# direction after normalisation would be rounding noise.
SILENCE = 1e-8


@dataclass(frozen=True, eq=False)
class Clip:
    """One decoded audio clip.

    Attributes
    ----------
    signal : ndarray of shape (n_samples,), float32
        Mono samples in [-1, 1] (the mean of the channels of a multichannel
        file).
    sample_rate : int
        Samples per second.
    label : str
        The class: ``<label>`` of ``<label>.<id>.wav``, or the name of the
        sub-folder holding the file.
    name : str
        The file's path relative to the folder, with ``/`` separators, e.g.
        ``"blues.00000.wav"`` or ``"blues/take1.wav"``.
    """

    signal: np.ndarray = field(repr=False)
    sample_rate: int
    label: str
    name: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.signal) / self.sample_rate


def load_audio_folder(folder, *, checksums=None, progress=True) -> list[Clip]:
    """Decode every WAV file of a folder of labelled clips.

    Two layouts are understood (not mixed in one folder):

    * GTZAN naming, files directly in ``folder``: ``<label>.<id>.wav``;
    * one sub-folder per label: ``<label>/<anything>.wav`` (one level deep).

    Hidden entries (names starting with ``.``) are ignored. Clips come in
    sorted order of their names, so the order is the same on every machine.

    Parameters
    ----------
    folder : str or Path
    checksums : dict of str to str, optional
        ``name -> sha256`` of the file bytes, names as in :attr:`Clip.name`.
        When given, the folder must hold exactly these files and each must
        have its checksum.
    progress : bool
        Show a progress bar (on stderr) while decoding.

    Returns
    -------
    list of Clip

    Raises
    ------
    FileNotFoundError
        The folder does not exist, is empty, holds no WAV file, or lacks a
        file named in ``checksums``.
    ValueError
        A file cannot be decoded, is misnamed, is not in ``checksums`` or has
        another checksum, or the two layouts are mixed; the message names the
        file.
    """
    return _load(Path(folder), checksums, progress, source=None)


def load_gtzan(data_dir=None, progress=True) -> list[Clip]:
    """The GTZAN subset: 10 genres x 10 clips of 15-20 s, 22,050 Hz mono.

    Reads ``<data_dir>/gtzan-10x10/<genre>.000NN.wav`` for the genres of
    ``GTZAN_GENRES`` and NN = 00..09, each the first ``GTZAN_FRAMES[name]``
    frames of the original 30 s GTZAN clip (Tzanetakis & Cook 2002). The
    folder must hold exactly these 100 files, and each file's SHA-256 must be
    the one in ``GTZAN_SHA256`` (of the 16-bit PCM WAV with a plain 44-byte
    header, as ``soundfile.write(..., subtype="PCM_16")`` writes it).

    Parameters
    ----------
    data_dir : str or Path, optional
        The data directory; defaults to the environment variable
        ``DIFFSC_DATA``.
    progress : bool
        Show a progress bar (on stderr) while decoding.

    Returns
    -------
    list of Clip
        100 clips sorted by name (genre, then clip number).

    Raises
    ------
    FileNotFoundError
        No data directory, or missing files; the message says where to get
        them.
    ValueError
        A checksum mismatch or an unexpected extra WAV file.
    """
    folder = _files.data_dir(data_dir) / GTZAN_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing; get it from {GTZAN_SOURCE}")
    return _load(folder, GTZAN_SHA256, progress, source=GTZAN_SOURCE)


def snippet_spectra(signal, sample_rate, *, snippet_ms=50, n_bands=128, max_hz=None) -> np.ndarray:
    """Band-pooled magnitude spectra of consecutive snippets, each of unit norm.

    The inputs of the audio experiment (appendix E), computed as follows.

    1. Snippets: consecutive, non-overlapping windows of
       ``L = floor(sample_rate * snippet_ms / 1000)`` samples (hop = L;
       1102 samples at 22,050 Hz). A trailing partial snippet is dropped, so
       there are ``floor(len(signal) / L)`` of them before step 4.
    2. Spectrum: each snippet times a periodic Hann window
       ``w[t] = 0.5 - 0.5 cos(2 pi t / L)``, then the magnitude of its real
       FFT, ``|np.fft.rfft|``: ``L // 2 + 1`` bins ``k`` at ``k * sample_rate / L``
       Hz (20 Hz apart for 50 ms), DC included.
    3. Bands: the magnitudes of the bins at frequencies ``f <= max_hz`` are
       summed into ``n_bands`` equal-width bands, band
       ``b = min(floor(f * n_bands / max_hz), n_bands - 1)``. Pooling adjacent
       bins keeps the dimension modest: D = 128 instead of the 552 bins of a
       50 ms snippet at 22,050 Hz.
    4. Normalisation: snippets whose band vector has an l2 norm at or below
       ``1e-8`` of the clip's largest are dropped as silent; every other one
       is divided by its l2 norm, so the squared loss and the sparsity
       strength do not depend on loudness.

    Parameters
    ----------
    signal : array_like of shape (n_samples,)
        Mono samples.
    sample_rate : int
        Samples per second.
    snippet_ms : float
        Snippet length in milliseconds.
    n_bands : int
        Number of frequency bands D.
    max_hz : float, optional
        Upper edge of the top band; defaults to the Nyquist frequency
        ``sample_rate / 2``.

    Returns
    -------
    ndarray of shape (n_snippets, n_bands), float64
        One unit-norm row per non-silent snippet, in time order.

    Examples
    --------
    >>> rate = 8000
    >>> t = np.arange(rate) / rate  # one second of a 1 kHz tone
    >>> spectra = snippet_spectra(np.sin(2 * np.pi * 1000 * t), rate, n_bands=40)
    >>> spectra.shape  # 20 snippets of 50 ms; bands of 100 Hz up to 4 kHz
    (20, 40)
    >>> int(spectra[0].argmax())  # 1000 Hz lies in band 10, [1000, 1100) Hz
    10
    >>> bool(np.allclose(np.linalg.norm(spectra, axis=1), 1.0))
    True
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"signal must be one-dimensional (mono), got shape {signal.shape}")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    # The small addition keeps e.g. 8000 Hz * 50 ms = 400 from flooring to 399.
    length = math.floor(sample_rate * snippet_ms / 1000 + 1e-9)
    if length < 2:
        raise ValueError(f"snippet_ms={snippet_ms} gives {length} sample(s) at {sample_rate} Hz; need at least 2")
    if not (isinstance(n_bands, (int, np.integer)) and n_bands > 0):
        raise ValueError(f"n_bands must be a positive integer, got {n_bands!r}")
    nyquist = sample_rate / 2
    max_hz = nyquist if max_hz is None else max_hz
    if not 0 < max_hz <= nyquist:
        raise ValueError(f"max_hz must be in (0, {nyquist}] (the Nyquist frequency), got {max_hz}")
    freqs = np.fft.rfftfreq(length, d=1 / sample_rate)
    kept = freqs <= max_hz
    band = np.minimum((freqs[kept] * n_bands / max_hz).astype(np.int64), n_bands - 1)
    if np.bincount(band, minlength=n_bands).min() == 0:
        raise ValueError(
            f"n_bands={n_bands} leaves bands without an FFT bin: a {length}-sample snippet has "
            f"{kept.sum()} bins up to {max_hz} Hz; lower n_bands or raise max_hz"
        )
    pool = np.zeros((kept.sum(), n_bands))
    pool[np.arange(kept.sum()), band] = 1.0

    n_snippets = len(signal) // length
    snippets = signal[: n_snippets * length].reshape(n_snippets, length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)
    spectra = np.abs(np.fft.rfft(snippets * window, axis=1))[:, kept] @ pool
    norms = np.linalg.norm(spectra, axis=1)
    loud = norms > SILENCE * norms.max(initial=0.0)
    return spectra[loud] / norms[loud, None]


def audio_features(clips, *, snippet_ms=50, n_bands=128, max_hz=None, progress=True):
    """The snippet spectra of a list of clips, stacked, with their labels.

    Each clip goes through :func:`snippet_spectra` (see there for the
    window, hop, band pooling and normalisation); its rows are appended in
    time order, clip after clip.

    Parameters
    ----------
    clips : sequence of Clip
    snippet_ms, n_bands, max_hz
        As in :func:`snippet_spectra`. With ``max_hz=None`` all clips must
        share one sample rate, so that a band means the same frequencies in
        every row.
    progress : bool
        Show a progress bar (on stderr) over the clips.

    Returns
    -------
    X : ndarray of shape (N, n_bands), float64
        One unit-norm row per non-silent snippet.
    labels : ndarray of shape (N,), str
        The label of each snippet's clip.
    clip_index : ndarray of shape (N,), int64
        The position in ``clips`` of each snippet's clip (to split train and
        test by clip, never by snippet).

    Examples
    --------
    >>> rate = 8000
    >>> tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    >>> clips = [Clip(tone, rate, "a", "a.0.wav"), Clip(tone[:rate // 2], rate, "b", "b.0.wav")]
    >>> X, labels, clip_index = audio_features(clips, n_bands=32, progress=False)
    >>> X.shape, str(labels[-1]), int(clip_index[-1])  # 20 + 10 snippets
    ((30, 32), 'b', 1)
    """
    rates = sorted({clip.sample_rate for clip in clips})
    if max_hz is None and len(rates) > 1:
        raise ValueError(
            f"clips have different sample rates {rates}; pass max_hz so that every band covers the same frequencies"
        )
    rows, labels, index = [], [], []
    for i, clip in enumerate(tqdm(clips, desc="snippet spectra", unit="clip", disable=not progress, leave=False)):
        spectra = snippet_spectra(
            clip.signal, clip.sample_rate, snippet_ms=snippet_ms, n_bands=n_bands, max_hz=max_hz
        )
        rows.append(spectra)
        labels += [clip.label] * len(spectra)
        index.append(np.full(len(spectra), i, dtype=np.int64))
    X = np.concatenate(rows) if rows else np.zeros((0, n_bands))
    clip_index = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    return X, np.array(labels, dtype=str), clip_index


def _load(folder: Path, checksums, progress, source) -> list[Clip]:
    """:func:`load_audio_folder`; ``source`` (where to get the files) goes into the errors."""
    where = "" if source is None else f"; get it from {source}"
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder {folder} does not exist{where}")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise FileNotFoundError(f"audio folder {folder} is empty{where}")
    found = {}  # name -> (path, label)
    for entry in entries:
        if entry.is_file() and entry.suffix.lower() == ".wav":
            match = _GTZAN_NAME.match(entry.name)
            if match is None:
                raise ValueError(f"{entry}: a WAV file directly in the folder must be named <label>.<id>.wav")
            found[entry.name] = (entry, match["label"])
        elif entry.is_dir():
            for path in sorted(entry.iterdir()):
                if path.is_file() and path.suffix.lower() == ".wav" and not path.name.startswith("."):
                    found[f"{entry.name}/{path.name}"] = (path, entry.name)
    if not found:
        raise FileNotFoundError(
            f"no .wav files in {folder}: expected <label>.<id>.wav files, or one sub-folder per label "
            f"holding .wav files{where}"
        )
    if len({"/" in name for name in found}) > 1:
        raise ValueError(
            f"{folder} mixes <label>.<id>.wav files with label sub-folders; use one layout"
        )
    if checksums is not None:
        missing = sorted(set(checksums) - set(found))
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the {len(checksums)} files are missing from {folder}: "
                f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
                + ("" if source is None else f"; get them from {source}")
            )
        extra = sorted(set(found) - set(checksums))
        if extra:
            raise ValueError(
                f"{folder} holds files that are not part of the data set: "
                f"{', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}; remove them"
            )

    clips = []
    for name in tqdm(sorted(found), desc=f"decoding {folder.name}", unit="file", disable=not progress, leave=False):
        path, label = found[name]
        content = path.read_bytes()
        if checksums is not None:
            _verify(path, content, checksums[name], source)
        try:
            samples, rate = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=True)
        except soundfile.SoundFileError as err:
            raise ValueError(f"{path}: cannot decode it as audio ({err})") from err
        clips.append(Clip(samples.mean(axis=1, dtype=np.float32), int(rate), label, name))
    return clips


def _verify(path: Path, content: bytes, expected: str, source) -> None:
    found = hashlib.sha256(content).hexdigest()
    if found != expected:
        raise ValueError(
            f"{path}: checksum mismatch (sha256 {found}, expected {expected}); the file is damaged or "
            "not the expected one" + ("" if source is None else f": get it again from {source}")
        )


# The GTZAN subset, name -> (frames, sha256 of the WAV file's bytes).
_GTZAN_TABLE = {
    "blues.00000.wav": (333484, "e0d0484f086882e56141af601e1e19ce5f67a4bb3d07ef04252ff13c4fe4c5cf"),
    "blues.00001.wav": (376922, "04f8b28b9c3968ca178388b153403daff824cf9ef0de3b8682044deb98db5026"),
    "blues.00002.wav": (379282, "bba3af71e13232d496bfb0acf2390d44807638d9276c8b809cd72100b16bfbfa"),
    "blues.00003.wav": (396238, "5748c2e418a19c076c68befab679633928ebf1127b64f31341e1d1b05da019cd"),
    "blues.00004.wav": (382765, "c7c39067488a3369b8c79d680b5f61c2ed3fc31ee2ffbf78a66a604cc8fb9b86"),
    "blues.00005.wav": (343450, "39a4ae9cfcd98016e9028770436eed5a75f628cff70598843789af5dc94b789d"),
    "blues.00006.wav": (364574, "1ddbe80bb5142c2ab8f9253b354dee60174255a14b22aa3fa02d48e7374e534b"),
    "blues.00007.wav": (395731, "88d783a7917c741fab11df7c30db4c076365d58432bcbe85f2a38ccd669d5167"),
    "blues.00008.wav": (367529, "0efdd00a1ebc6bc5b2852e039e774488ad441586d78978e0cd1cacefbeaeff3b"),
    "blues.00009.wav": (400913, "8d8919c8cbf47e805f0a49da4b4261db8c66a64f90b0602d23607ae0ca0ec00f"),
    "classical.00000.wav": (383956, "0fb6a2a21a95762495e38b2a551bd6c0e55e4728fae12c15e519aeda37b378a3"),
    "classical.00001.wav": (381685, "40dbcec8696154fe8857728f216075cb07be56cc73b4792e78d93bb0791a01fd"),
    "classical.00002.wav": (394276, "0fbb6d28fb0df835c1a3cf9afb108ace622ef694d6eb3f45fdbfcc37e0ca3c50"),
    "classical.00003.wav": (334189, "cdfbb456b50428e9a788e3b74042e97681418f2588c75543a75596ae8941ac3e"),
    "classical.00004.wav": (363802, "9d559b8fd84a7f93a860ff5a22825315371890e36668d48789c274e46ac351d1"),
    "classical.00005.wav": (407219, "ee360739becb3b2a49453e4b85c5df32f20620825767b3aa8ff30706d6dbd34c"),
    "classical.00006.wav": (412665, "d24936745228fb5f6c3d3b178151614fff784d3096d3cb127eac11fc50d2b9f2"),
    "classical.00007.wav": (421926, "97e151df41eb019f3f2ab3b9969c6506825ad1a64fcc795f2f6dff4ec8f3cc5e"),
    "classical.00008.wav": (429048, "9004e0caf971b560cfb5507603e382e3fd0d33e79c439d86fe38c942a182ab46"),
    "classical.00009.wav": (426491, "1f09be7f84e32d634169b746a806237c47eb86ec2547eca804f7e4683319d957"),
    "country.00000.wav": (385191, "a044ae48c837faff65eda99eaf3d6b51e933a8c3bce7ecd1022ff382355a6f52"),
    "country.00001.wav": (439390, "cd82abad9908d5f02594e43dfacb9513d5879d0de5324164f925bb69390c6bfa"),
    "country.00002.wav": (350727, "c4054dc01b9256afd5665451e68982c72f8124b469d5112f39ec2ae7abe36dd4"),
    "country.00003.wav": (358114, "89591f7760cc686ca3cdd828e3f9f2d49e8e1feaecf338af161baa295630f832"),
    "country.00004.wav": (409049, "61a7ef69b4bbbc6aff2a9b9cd7302f4f2e996914e34919ee61ff1e9fdaa5e450"),
    "country.00005.wav": (432753, "7d22a175d7d4e1a384d0af17c675dac3ea3bc0565dcbe15235663eac49d2bcc7"),
    "country.00006.wav": (385147, "b730a64fb0b5057a893fb4ed729a40e040c54cdf507a4c664be3d0124bae7494"),
    "country.00007.wav": (386338, "78f0cb9e2e6b30c1e5567bf69eec332ca73c03a949d0e7847cd911dfe0f95736"),
    "country.00008.wav": (331411, "ca13b85100b18912295a5276fd77d17542dd022e80807d6466e567864ea642c2"),
    "country.00009.wav": (401795, "646d2defa39c23c74b6f23456b57d614b9a156679d3a65c163f4725e5fe9327a"),
    "disco.00000.wav": (376966, "6a6d883c4960a506c6cdbab1b069d51182552386d831fd356392face5ee97cd3"),
    "disco.00001.wav": (359966, "fcd4503d5d6e18b809aa0253c82e1d5d7a5a73a1a3bedc5f169534ed5d00cbd7"),
    "disco.00002.wav": (414650, "30be3feb603c9ff9cc6c0143236621feacbc18396d5ddb7ceb81ee956ac2f08a"),
    "disco.00003.wav": (426380, "a7766b3bc5da65fe443ea73b71470d5f316a07fa5fe763538f508f9097d41b23"),
    "disco.00004.wav": (406646, "59d82262d7ed614f448fb5372c66eea82b9b433ee76e5d87ef6b077f175568e2"),
    "disco.00005.wav": (358444, "c32ab034f8e71d05d9026efab9852ee5e1fdefbc58a475fbfe0837f4df0e3e2b"),
    "disco.00006.wav": (360164, "80e180b45cef374d622e0139db35d6e4610083c20fab99142bdbfbc0b2e9a4a0"),
    "disco.00007.wav": (351344, "51dc2a14fd52a7d97c5936f547eda2bc6c902ce3148e5388efba97d4b37d449a"),
    "disco.00008.wav": (414032, "297a926cddb7ea2666bc70962237bb24bd74d643a4df51fb00c3ed1f4566b2ba"),
    "disco.00009.wav": (378730, "f0de2609fdf91b83d416090bae18bd385ecc2871a821d67fa1eeec7f00f544e3"),
    "hiphop.00000.wav": (353571, "676e028cf334804254cab9d3d0b99dcdfc1bbb10853aa93aef1c3e139604f5ef"),
    "hiphop.00001.wav": (425807, "094512c0e84614998a258a596ed2e5d4ae3930b7a9ae1d3c64a5a0c325d63b66"),
    "hiphop.00002.wav": (339481, "0d846a1d7ef9c74f33ecb29361bc29be2fb9e4e88db5b0464e88655a609b1bee"),
    "hiphop.00003.wav": (342304, "ff468bcb35d49e4bbd3ec4caa4248001c5a1cd74bb4be4ce94eea2ffaff2920e"),
    "hiphop.00004.wav": (373637, "d98b36f0fd4e1ea24dee3e80fa96348a1c75b4f9e3a41de7caf50b791c244a4e"),
    "hiphop.00005.wav": (438155, "82dcf65066f5c1ed6d4d9cce9edbe6764ac9324da099c10b1b0d0e3856688bd4"),
    "hiphop.00006.wav": (412776, "3fb8c976eb914174500817725f46dcca74bdcb6651d33a08ab7fcb684c8f2732"),
    "hiphop.00007.wav": (440470, "a6be38278fecef283611b9df613f10144148ba60e35f4793e400b8482fd5458b"),
    "hiphop.00008.wav": (402721, "2cd348608900ea4783fd36c24d70a47c5fe62d11e491c768c33700736ceb141f"),
    "hiphop.00009.wav": (414804, "3142076ee6db5aea2f8e0deb2aa0e3e7a7b66cee80bd7a72aa4cd9865458c522"),
    "jazz.00000.wav": (374894, "0bc2e3a8516d462520dd3954a5a77608efde9e7d8b5e7ff344c059b5ac8f56ea"),
    "jazz.00001.wav": (384706, "51a95940ee8063240138218b74362394c390741ce144c48bcb2a997923b3603d"),
    "jazz.00002.wav": (422411, "e1a1ea8d7ebe43be2e5030b8ce7b06d8313689c278626a966cdf5a1f48eabb93"),
    "jazz.00003.wav": (412864, "5b893462e2bd10a5074589bfcca0d1f72d54e506c73eee6d6a8e5aef8ead36c1"),
    "jazz.00004.wav": (396459, "c3552ca561e87f356914b5d0b60c1088c3afab0e3fb0a8e30149cd3f2d0acc5f"),
    "jazz.00005.wav": (368653, "2227de269ebf6e4f0fbbc1e262d9047279e55694d1b51866ad955f0d8a379383"),
    "jazz.00006.wav": (356063, "981efabb6ef6418294b98521b38a6b46bec405c173bea64e5466a5f43cdf0558"),
    "jazz.00007.wav": (361752, "cce251245ef6c1258ab4bb8064771734220f9d25750bdcfe21d3d39a1483d109"),
    "jazz.00008.wav": (431849, "f42c39dd11c122049ff032a334427278d2b4b280939941e73d1a885803779d58"),
    "jazz.00009.wav": (402677, "0d35553fa6ce6003dda5648022e4c3c6868008c8ec0174d6346cf8f74a2eb79d"),
    "metal.00000.wav": (351984, "51a7a31500c7ae85ced482fcc37daf13dc033e356e9e5f6a964860cbaf9a5903"),
    "metal.00001.wav": (339305, "c61afcb5410efc6d2f5aa7eeff9e36ed679eceb04f9acf1848b633a4fbd9a3c1"),
    "metal.00002.wav": (373945, "5ca506fde171e17d48e883cc981aa8a70b5610996b8a2317ebb07e8a94ca4b18"),
    "metal.00003.wav": (374717, "7345a9317fba96e61f59a476ce160d14b9ebbb085e2f3e5f10a829c799a73d01"),
    "metal.00004.wav": (412952, "2e28b28521eb89e70b377411467054d25206de0032364118a5e481660594a50f"),
    "metal.00005.wav": (367882, "ad0950c76a43e545ccab547fffeeaacb30c5d6bcecd6ce95dbd3e0d4f5a70b6f"),
    "metal.00006.wav": (394562, "199a5290d47e924b5daed24a89ba6ea633f35642c03676b00ad48ac12d5a6fdd"),
    "metal.00007.wav": (335645, "457c4e30a6cd209a8a40706002ee3e0f4c0d2324952e185796573a2e28dc3cdb"),
    "metal.00008.wav": (364089, "412683913095187c39bb710863c8a3ba2759ff1fc93caaddf98b36a0837c7a0d"),
    "metal.00009.wav": (379943, "cb6a46609f1d09cbbed159cefefd5b9933e3d1c14e799edf18521daa5c6cf44a"),
    "pop.00000.wav": (416105, "fa6aeac50395ef55eb575d6eb5860902f2f96e9f86b9383ac99b6363c12e258d"),
    "pop.00001.wav": (352689, "a5406cd35654694cb826045d4d29600b7ea111353ec8a75f7f765d77f50ce00c"),
    "pop.00002.wav": (404242, "4a77e809113ce7d408d1fbe49e3378d4c47ed6694b61a26385ad084e1f1f2b41"),
    "pop.00003.wav": (345391, "ceeff18cf3b045632ff03fe755a5253d75abc7028f444263692f79b281eaec1b"),
    "pop.00004.wav": (402280, "e641755a12a3073f62ac56542b536bb76fcda3d95fbc6df96816031cb62dc568"),
    "pop.00005.wav": (393085, "f91141ed8b332f8baa3fbb2c5aabe1f5fffc9efdbc2cbd65303ff6d9ff716b45"),
    "pop.00006.wav": (330794, "12fa706e00520adfa0cd71e0b148a6b8e4d12fce4d953bddaf97efdd93951080"),
    "pop.00007.wav": (398928, "c4d1dc9f3043c4002d809168b3221d83d593341f789ee2985e4e8f00cb583e39"),
    "pop.00008.wav": (396436, "342848aeaf65e9c4a437ee01fbf16f70df3a122440a42bebec9d0dbc8ce26f1a"),
    "pop.00009.wav": (363758, "4411dbb31099ba01019696a3f08e7fbbf0e5a7194338293c034e854298b9ba62"),
    "reggae.00000.wav": (357408, "3ed94a2d4d2ef1afa5b3b56c6303a2a08e37584412fdf8f6369909f2e27fa977"),
    "reggae.00001.wav": (415554, "8dc21703b67913e6a2bc8cc52cde28b2693736fe5f31d7a51376c55339cba934"),
    "reggae.00002.wav": (338996, "013725e05a8fc6612a38e13f3cdd529582f71cd9dce7c2c379b659be639ef07d"),
    "reggae.00003.wav": (435024, "53c2dc3cc7f2270040e954407f4d26b9a48ffd75d8b099e87955be16aaf693f2"),
    "reggae.00004.wav": (341775, "12b0bd2bd7865f14fa13cb57c6dd35739867dcc68f4ee95d6b5abd1ba00b71cc"),
    "reggae.00005.wav": (414121, "53fe7d29e21afa8b6073c5221109f87a19ba897c45c7baf36b15dca937f3462e"),
    "reggae.00006.wav": (424572, "da41e658de133c25213fc09a11b7229df0d67dc1a73c7071e626496b5b1177f2"),
    "reggae.00007.wav": (379987, "62b863928bfc6cbc3cceeed56b96d5dc1e700a9e13e1d382d26fc06112ac6847"),
    "reggae.00008.wav": (342811, "d136f4144f9ab533fbc62edab5bf726649b7bee148f78ca226c97eccbc338074"),
    "reggae.00009.wav": (359767, "02a90e4c88108200ae72c360b6fc2dadb4c2003ef813409893906c81887c7558"),
    "rock.00000.wav": (418994, "087071796904f727145eaefc682681d7683e7efcf9ec58c6d9dd74f2cd947a7f"),
    "rock.00001.wav": (361267, "3ddc44f856d3a52eb414916d6cfad1c1ebb26b68942fe1ced84cd3943239e3a6"),
    "rock.00002.wav": (396194, "4a1ed7e5b2e905d48b6e4945f03cd35f1c1451861b50e884ca4c8ddda945a3f2"),
    "rock.00003.wav": (389072, "b4ed1257af07b7ea6855733a53823983c4f8012c8b6d36dcd75ae6fa790976c9"),
    "rock.00004.wav": (385279, "e52b4e3d57a6503bc05a61cd1121d5f2dc7732fb88aee2d7fc56b5df07773754"),
    "rock.00005.wav": (399523, "911b7f4a0ea86ae889e062eb2e2ad1647a6544c71cb1faeeb2b0b2488038e3ea"),
    "rock.00006.wav": (359238, "7b114673f7c3ba4116277da8d9d1575ce35311f0b0775457fb86615192e4337f"),
    "rock.00007.wav": (383912, "0856782cc5461de99c34853b722886353069e8a310c5309d392066f977c6946a"),
    "rock.00008.wav": (417891, "e4c3c44622e749d8ee5838972f5d7ea66284996a58511abcf7f3bf143984d363"),
    "rock.00009.wav": (418729, "fe2578d9c8e73d3255d9dded3d20a1ba6acfe85d2c49dc07500391215394c3bd"),
}
GTZAN_FRAMES = {name: frames for name, (frames, _) in _GTZAN_TABLE.items()}
GTZAN_SHA256 = {name: digest for name, (_, digest) in _GTZAN_TABLE.items()}
