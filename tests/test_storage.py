from pathlib import Path

import pytest

from harken import audio, manifest
from harken.storage import RemoteError, read_remote, remote_exists, remote_url


def test_remote_urls_survive_pathlib() -> None:
    assert remote_url("s3://bucket/shards/a.tar#0001.wav") == "s3://bucket/shards/a.tar#0001.wav"
    assert remote_url(Path("s3://bucket/shards") / "a.tar") == "s3://bucket/shards/a.tar"  # s3:/bucket/...
    assert remote_url(Path("gs://b/x.csv").parent / "y.wav") == "gs://b/y.wav"
    assert remote_url("https://example.org/a.wav") == "https://example.org/a.wav"
    assert remote_url("file:///data/a.wav") == "file:///data/a.wav"
    for local in ("/data/a.wav", "data/a.wav", "C:/data/a.wav", "a:b.wav", Path("x") / "y.wav"):
        assert remote_url(local) is None


def test_objects_that_cannot_be_read_give_one_line(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match=r"^nosuch://b/k: .*nosuch"):  # no filesystem for the scheme
        read_remote("nosuch://b/k")
    assert not remote_exists(f"file://{tmp_path}/missing.wav")
    with pytest.raises(RemoteError, match="missing.wav: no such object"):
        read_remote(f"file://{tmp_path}/missing.wav")
    with pytest.raises(audio.AudioError, match="missing.wav: no such object"):
        audio.read(f"file://{tmp_path}/missing.wav", 16000)
    with pytest.raises(manifest.ManifestError, match="missing.csv: no such CSV file"):
        manifest.read_csv(f"file://{tmp_path}/missing.csv")
    (tmp_path / "a.bin").write_bytes(b"0123456789")
    assert read_remote(f"file://{tmp_path}/a.bin", 2, 5) == b"234"  # a ranged read


def test_a_server_that_ignores_range_requests_is_named(tmp_path: Path) -> None:
    """Python's own http.server answers a ranged GET with the whole file: said, not read as the range."""
    import functools
    import http.server
    import threading

    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 400)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.bin"
        assert remote_exists(url) and len(read_remote(url)) == 102400
        with pytest.raises(RemoteError, match=r"a.bin: asked for bytes 2-5, got 102,400 .*ignores Range"):
            read_remote(url, 2, 5)
    finally:
        server.shutdown()
