"""`cronium-runtime healthcheck` (the runtime image's HEALTHCHECK) against a real
service, against nothing, and against something that answers but is not healthy."""
import socket
import threading

from lib.proc import free_port, run_cli

from .conftest import REPO


def test_healthy_service_exits_0(start_service):
    svc = start_service(args=["--dev"])
    r = run_cli(["healthcheck"], env={"PORT": svc.port})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "healthy"


def test_nothing_listening_exits_1():
    r = run_cli(["healthcheck"], env={"PORT": free_port()})
    assert r.returncode == 1
    assert "unhealthy" in r.stderr


def test_stopped_service_exits_1(start_service):
    svc = start_service(args=["--dev"])
    assert run_cli(["healthcheck"], env={"PORT": svc.port}).returncode == 0
    svc.stop()
    assert run_cli(["healthcheck"], env={"PORT": svc.port}).returncode == 1


def test_a_listener_that_is_not_healthy_exits_1():
    """Something accepts on the port but answers 503: not healthy."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(10)
    port = srv.getsockname()[1]

    def serve():
        try:
            conn, _ = srv.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = run_cli(["healthcheck"], env={"PORT": port})
    finally:
        t.join(10)
        srv.close()
    assert r.returncode == 1


def test_port_comes_from_the_config_file_as_in_the_image(start_service, tmp_path):
    """The image sets CONFIG_FILE; the probe must read the same file as the service."""
    svc = start_service(args=["--dev"])
    cfg = tmp_path / "config.yaml"
    cfg.write_text((REPO / "containers/runtime-api/config.yaml").read_text()
                   .replace("port: 8081", f"port: {svc.port}"))
    r = run_cli(["healthcheck"], env={"CONFIG_FILE": str(cfg), "PORT": None})
    assert r.returncode == 0, r.stderr
    r = run_cli(["healthcheck", "--config", str(cfg)], env={"PORT": None})
    assert r.returncode == 0, r.stderr
    cfg.write_text(cfg.read_text().replace(f"port: {svc.port}", f"port: {free_port()}"))
    assert run_cli(["healthcheck"], env={"CONFIG_FILE": str(cfg), "PORT": None}).returncode == 1
