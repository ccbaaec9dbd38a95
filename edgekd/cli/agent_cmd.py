"""`edgekd agent`: run the on-device benchmark agent (base install + one runtime; never torch)."""
from __future__ import annotations

import logging
import sys
import threading

import click

from edgekd.errors import ConfigError


@click.command("agent")
@click.option("--listen", metavar="HOST:PORT", help="Serve TCP on this address (port 0 = a free port). 127.0.0.1 unless a key is set.")
@click.option("--serial", "serial_port", metavar="DEVICE", help="Serve a serial line instead, e.g. /dev/ttyGS0 (USB gadget).")
@click.option("--baud", default=921600, show_default=True, help="Serial baud rate.")
@click.option("--key-file", type=click.Path(dir_okay=False), help="Shared key file (else $EDGEKD_AGENT_KEY). Required off loopback.")
@click.option("--workdir", default="~/.cache/edgekd/agent", show_default=True, help="Content-addressed store for uploads.")
@click.option("--quota-mb", default=4096, show_default=True, type=click.IntRange(min=1), help="Disk quota of the store.")
@click.option("--verbose", "-v", is_flag=True, help="Log every connection and error to stderr.")
def command(listen: str | None, serial_port: str | None, baud: int, key_file: str | None, workdir: str,
            quota_mb: int, verbose: bool) -> None:
    """Run the benchmark agent on this device.

    \b
    The host then benchmarks on it with --device:
      edgekd agent --listen 127.0.0.1:7000          host: --device tcp://127.0.0.1:7000
      edgekd agent --listen 0.0.0.0:7000 --key-file agent.key   (any address needs a key)
      edgekd agent --serial /dev/ttyGS0 --baud 921600           host: --device serial:///dev/ttyACM0?baud=921600
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
    agent = AgentConfig(store=ContentStore(workdir, quota_mb << 20), key=key)
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
