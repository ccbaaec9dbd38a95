"""`edgekd models`: the registered model families, their defaults and the size of every spec in
their student search space."""
from __future__ import annotations

import json

import click


def _input_of(entry: dict, input_shape: tuple[int, ...]) -> str:
    """The input a listed spec was counted at: its own (a resolution= spec), a text family's tokens, or the data's."""
    if isinstance(entry.get("at"), dict):  # text: counted at a sequence length and vocabulary, not an image
        return f"{entry['at'].get('seq_len')} tokens"
    return "x".join(map(str, entry.get("input_shape") or input_shape))


def _parse_shape(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise click.BadParameter(f"{value!r} is not CxHxW with positive integers, e.g. 1x8x8 or 3x32x32")
    return shape


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


@click.command("models")
@click.option("--input-shape", default="1x8x8", show_default=True, callback=_parse_shape,
              help="Image input CxHxW at which params and MACs are counted (overridden by --data).")
@click.option("--data", default=None,
              help="Count at this dataset's input shape and classes (digits, an .npz, an image folder), "
                   "as deploy and distill would see it.")
@click.option("--image-size", type=click.IntRange(min=4), default=None,
              help="Images resampled to NxN (with --data, as `--image-size` there; alone, HxW of --input-shape).")
@click.option("--classes", type=click.IntRange(min=2), default=None, help="Number of classes [default: 10, or the data's].")
@click.option("--family", "families", multiple=True, help="Only this family (repeatable); or your own family's builder "
              "module:function (e.g. my_pkg.my_models:build), registered with --family-grid and listed like a built-in.")
@click.option("--family-grid", type=click.Path(dir_okay=False), default=None,
              help="YAML grid of the --family builder's arguments (key: [values], optional name:); every combination is one spec.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(input_shape: tuple[int, ...], data: str | None, image_size: int | None, classes: int | None,
            families: tuple[str, ...], family_grid: str | None, as_json: bool) -> None:
    """List model families (students and teachers) with their defaults, and params / MACs of each
    spec in their search space (the candidates `select` and `deploy` choose from).

    A spec is `family:key=value,...`, e.g. `cnn:width=16,depth=3` or `mlp:hidden=128x2`; a bare
    family name uses its defaults. Text families are counted at their own vocabulary and length.
    Families of scale "real" (mobilenetv2, mobilenetv3, efficientnet_lite, resnet_basic, and your own)
    take their input resolution from the spec (resolution=N) and are counted at it.

    \b
    Your own family: --family my_pkg.my_models:build --family-grid grid.yaml, where build(**params)
    returns an nn.Module (it also gets num_classes / in_channels / input_shape if it takes them) and
    grid.yaml maps its arguments to lists of values (optional name: for specs). Every combination is
    one spec; the smallest is built and exported to ONNX once as a check.
    """
    from edgekd.models import MODELS, default_specs, describe_families

    from edgekd.models.user_family import check_user_family, is_builder_ref, register_user_family

    user = [register_user_family(f, family_grid) for f in families if is_builder_ref(f)]
    families = tuple(f for f in families if not is_builder_ref(f)) + tuple(user)
    for name in families:
        MODELS.get(name)  # unknown name -> ConfigError with "did you mean", exit 2
    shape_from = "--input-shape"
    task = "image"
    if data is not None:
        from edgekd.data import load_dataset

        ds = load_dataset(data, image_size=image_size)
        task = getattr(ds, "task", "image")
        if not families:  # the families that can take this data (an image set lists no text family)
            families = tuple(name for name, fam in MODELS.items() if fam.task == task)
        if task == "image":
            input_shape, shape_from = tuple(int(d) for d in ds.input_shape), f"data {data}"
        classes = classes or int(ds.num_classes)
    elif image_size is not None:
        input_shape, shape_from = (input_shape[0], image_size, image_size), "--image-size"
    classes = classes or 10
    for name in user:  # builds, gives (N, classes) logits and exports to ONNX, or one error line
        check_user_family(name, input_shape, classes)
    rows = describe_families(input_shape, classes, families or None)
    default_teacher, default_student = default_specs(task)  # what teacher / distill / deploy use for this data
    if task == "image":
        where = f"counted at {'x'.join(map(str, input_shape))}, {classes} classes ({shape_from})"
    else:
        where = f"counted at each family's own vocabulary and sequence length, {classes} classes (data {data})"
    if as_json:
        click.echo(json.dumps({
            "input_shape": list(input_shape),
            "num_classes": classes,
            "shape_from": shape_from,
            "default_teacher": default_teacher,
            "default_student": default_student,
            "families": rows,
        }))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"params and MACs {where}\n"
                  f"default teacher (deploy, teacher): {default_teacher}\n"
                  f"default student (`edgekd distill` without --student): {default_student}\n", soft_wrap=True)
    for row in rows:
        console.print(f"[bold]{row['name']}[/bold] ({row['role']}, {row['task']}, {row.get('scale', 'micro')} scale)  "
                      f"bare `{row['name']}` means {row['default_spec']}", soft_wrap=True)
        table = Table(show_edge=False)
        table.add_column("spec")
        table.add_column("params", justify="right")
        table.add_column("MACs", justify="right")
        table.add_column("input")
        for entry in row["search_space"]:
            table.add_row(entry["spec"], _human(int(entry["params"])), _human(int(entry["macs"])), _input_of(entry, input_shape))
        if not row["search_space"]:
            table.add_row("(teacher only: no search space)", "", "")
        console.print(table)
        console.print()
