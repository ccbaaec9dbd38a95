"""`edgekd agent`: run the on-device benchmark agent (base install + one runtime; never torch)."""
from __future__ import annotations

import logging
import sys
import threading

import click

from edgekd.cli.params import FloatRange

from edgekd.errors import ConfigError


@click.command("agent")
@click.option("--listen", metavar="HOST:PORT", help="Serve TCP on this address (port 0 = a free port). 127.0.0.1 unless a key is set.")
@click.option("--serial", "serial_port", metavar="DEVICE", help="Serve a serial line instead, e.g. /dev/ttyGS0 (USB gadget).")
@click.option("--baud", default=921600, show_default=True, help="Serial baud rate.")
@click.option("--key-file", type=click.Path(dir_okay=False), help="Shared key file (else $EDGEKD_AGENT_KEY). Required off loopback.")
@click.option("--workdir", default="~/.cache/edgekd/agent", show_default=True, help="Content-addressed store for uploads.")
@click.option("--quota-mb", default=4096, show_default=True, type=click.IntRange(min=1), help="Disk quota of the store.")
@click.option("--max-connections", default=32, show_default=True, type=click.IntRange(min=1),
              help="Sessions served at once; more connections are closed at once.")
@click.option("--preauth-seconds", default=10.0, show_default=True, type=FloatRange(min=0.1, max=3600),
              help="A TCP connection not authenticated this long after it opened is closed.")
@click.option("--idle-seconds", default=600.0, show_default=True, type=FloatRange(min=0.1, max=86400 * 7),
              help="No complete frame this long: a TCP session is closed, a serial host must authenticate again. "
                   "A peer dripping bytes does not reset it.")
@click.option("--max-uploads", default=8, show_default=True, type=click.IntRange(min=1, max=4096),
              help="Uploads one session may have open at once (each holds a file open).")
@click.option("--max-held-mb", default=16, show_default=True, type=click.IntRange(min=1, max=1 << 16),
              help="Memory for upload chunks held ahead of a gap, all sessions together.")
@click.option("--verbose", "-v", is_flag=True, help="Log every connection and error to stderr.")
def command(listen: str | None, serial_port: str | None, baud: int, key_file: str | None, workdir: str,
            quota_mb: int, max_connections: int, preauth_seconds: float, idle_seconds: float, max_uploads: int,
            max_held_mb: int, verbose: bool) -> None:
    """Run the benchmark agent on this device.

    \b
    The host then benchmarks on it with --device:
      edgekd agent --listen 127.0.0.1:7000          host: --device tcp://127.0.0.1:7000
      edgekd agent --listen 0.0.0.0:7000 --key-file agent.key   (any address needs a key)
      edgekd agent --serial /dev/ttyGS0 --baud 921600           host: --device serial:///dev/ttyACM0?baud=921600

    \b
    Limits (reported to the host in `hello`, see docs/PROTOCOL.md §6): --max-connections,
    --preauth-seconds, --idle-seconds, --max-uploads, --max-held-mb. Fixed: before authentication a
    frame carries at most 64 KiB and a TCP peer may send at most 16 KiB of non-frames; NaN/Infinity
    and out-of-range request fields are refused; warm-up and the timed loop stop at max_s. Out of
    file descriptors, memory or threads, the agent refuses that one connection or request, logs it
    and keeps serving.
    """
    from edgekd.agent import auth
    from edgekd.agent.server import AgentConfig, serve_serial, serve_tcp
    from edgekd.agent.storage import ContentStore
    from edgekd.agent.transports.tcp import is_loopback, listen_tcp, parse_host_port

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s edgekd-agent %(levelname)s %(message)s")
    if (listen is None) == (serial_port is None):
        raise ConfigError("give exactly one of --listen HOST:PORT or --serial DEVICE")
    key = auth.load_key(key_file=key_file)
    from edgekd.agent.limits import MB, AgentLimits

    limits = AgentLimits(max_connections=max_connections, preauth_s=preauth_seconds, idle_s=idle_seconds,
                         max_uploads_per_session=max_uploads, max_held_bytes=max_held_mb * MB)
    agent = AgentConfig(store=ContentStore(workdir, quota_mb << 20), key=key, limits=limits)
    stop = threading.Event()
    try:
        if listen is not None:
            host, port = parse_host_port(listen, "--listen")
            if key is None and not is_loopback(host):
                raise ConfigError(
                    f"refusing to listen on {host} without a key: pass --key-file FILE or set {auth.KEY_ENV} "
                    "(or listen on 127.0.0.1)"
                )
            sock = listen_tcp(host, port)
            click.echo(f"edgekd agent listening on tcp://{host}:{sock.getsockname()[1]}", nl=True)
            sys.stdout.flush()
            serve_tcp(agent, sock, stop)
        else:
            if key is None:
                click.echo(f"warning: serving {serial_port} without a key; anyone on this line can use the agent", err=True)
            serve_serial(agent, serial_port, baud, stop,
                         on_ready=lambda url: (click.echo(f"edgekd agent listening on {url}"), sys.stdout.flush()))
    except KeyboardInterrupt:
        stop.set()
