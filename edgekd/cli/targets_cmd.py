"""`edgekd targets`: list the device targets (built-in, $EDGEKD_TARGETS, --targets-dir)."""
from __future__ import annotations

import json

import click


@click.command("targets")
@click.option("--targets-dir", default=None, help="extra directory of <name>.yaml target files")
@click.option("--json", "as_json", is_flag=True, help="print every target's full record as JSON")
def command(targets_dir: str | None, as_json: bool) -> None:
    """List device targets: runtimes in order of preference, formats, precisions, threads, layout,
    the accelerator they run on ("default": each runtime's own) and the prior hardware figures. Add one by dropping <name>.yaml into --targets-dir or $EDGEKD_TARGETS."""
    from edgekd.device.targets import list_targets

    targets = list_targets(targets_dir)
    if as_json:
        click.echo(json.dumps([t.to_dict() for t in targets], sort_keys=True))
        return
    click.echo(f"{'target':18} {'arch':8} {'runtimes':30} {'formats':24} {'precisions':16} {'threads':7} "
               f"{'layout':6} accelerator")
    for t in targets:
        threads = "all" if t.default_threads is None else str(t.default_threads)
        aliases = f"  (alias: {', '.join(t.aliases)})" if t.aliases else ""
        click.echo(f"{t.name:18} {t.arch:8} {','.join(t.runtimes):30} {','.join(t.formats):24} "
                   f"{','.join(t.precisions):16} {threads:7} {t.input_layout:6} {t.accelerator or 'default'}{aliases}")
