"""The shape of the library (docs/architecture.md): one options schema that every entry point
uses, imports that flow one way, and a decoder that loads no training code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import inrcodec
from inrcodec.bench.codecs import parse_codec
from inrcodec.options import EncodeOptions
from inrcodec.presets import FAMILY_NAMES, PRESETS, SCHEDULE_KEYS
from inrcodec_cli.main import app

from .helpers import crop


def modules_after(code: str) -> set[str]:
    """The modules of ours and torch's that a fresh interpreter holds after running ``code``."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if " \
                    "m.split('.')[0] in ('inrcodec', 'inrcodec_cli', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


TRAINING = {"inrcodec.fit", "inrcodec.presets", "inrcodec.ratecontrol", "inrcodec.options",
            "inrcodec.encoder", "inrcodec.training", "inrcodec.training.base",
            "inrcodec.training.latent", "inrcodec.training.siren"}


def test_decoding_loads_no_training_code(encoded, tmp_path):
    path = tmp_path / "a.inr"
    path.write_bytes(encoded.data)
    loaded = modules_after(
        "import inrcodec\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "assert inrcodec.decode(data, scale=2).shape[0] == 96\n"
        "inrcodec.info(data)\n"
        "from PIL import Image\n"
        f"Image.open({str(path)!r}).load()\n")
    assert "inrcodec.decoder" in loaded and "inrcodec.models.latent" in loaded
    assert not loaded & TRAINING, loaded & TRAINING  # no family's encode side either
    assert not any(m.startswith(("inrcodec.bench", "inrcodec_cli")) for m in loaded)
    # inr decode and inr info: the command line knows the families' names (presets.py, data
    # for its help) and loads no training code either.
    loaded = modules_after(
        "import sys\nfrom inrcodec_cli.main import app\n"
        f"for args in (['decode', {str(path)!r}, '-o', {str(tmp_path / 'a.png')!r}],\n"
        f"             ['info', {str(path)!r}]):\n"
        "    sys.argv = ['inr', *args]\n"
        "    try:\n        app(prog_name='inr')\n    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code")
    assert "inrcodec.decoder" in loaded and (tmp_path / "a.png").exists()
    assert not loaded & (TRAINING - {"inrcodec.presets"}), loaded & TRAINING


def test_names_efforts_coders_help_and_version_need_no_torch():
    loaded = modules_after(
        "import inrcodec, sys\n"
        "from inrcodec_cli.main import app\n"
        "from inrcodec.options import EncodeOptions\n"
        "EncodeOptions(model='dct', effort='best', coder='zstd', training={'steps': 5})\n"
        "print(inrcodec.FAMILY_NAMES, inrcodec.EFFORTS)\n"
        "for args in (['--help'], ['--version'], ['encode', '--help']):\n"
        "    sys.argv = ['inr', *args]\n"
        "    try:\n"
        "        app(prog_name='inr')\n"
        "    except SystemExit:\n"
        "        pass")
    assert "inrcodec_cli.main" in loaded
    assert not any(m == "torch" or m.startswith("torch.") for m in loaded)


ROOT = Path(__file__).resolve().parent.parent
#: The layers of docs/architecture.md: a module imports only from its own layer or below.
LAYERS = {
    "errors": 1, "fields": 1, "presets": 1, "entropy": 1, "rans": 1, "context": 1, "arm": 1, "limits": 1,
    "pace": 1,
    "imageio": 2, "color": 2, "encodings": 2, "quantize": 2, "container": 2, "metrics": 2,
    "parallel": 2,
    "models": 3,
    "bitstream": 4, "decoder": 4,
    "options": 5, "fit": 5, "ratecontrol": 5, "encoder": 5, "pillow": 5, "batch": 5,
    "training": 5,
    "bench": 6,
    "cli": 7,
}


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name of ours (None: not ours, or the package itself)."""
    parts = module.split(".")
    if parts[0] == "inrcodec_cli":
        return LAYERS["cli"]
    return LAYERS.get(parts[1]) if parts[0] == "inrcodec" and len(parts) > 1 else None


def imports_of(path: Path, package: str) -> set[str]:
    """Every module of ours that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if layer_of(m) is not None}


def test_imports_flow_one_way():
    files = [(p, "inrcodec" + "".join(f".{q}" for q in p.relative_to(ROOT / "inrcodec").parts[:-1]))
             for p in (ROOT / "inrcodec").rglob("*.py") if p.name != "__init__.py"
             or p.parent.name != "inrcodec"]
    files += [(p, "inrcodec_cli") for p in (ROOT / "cli").glob("*.py")]
    wrong = []
    for path, package in files:
        own = layer_of(package + "." + path.stem) if package == "inrcodec" else layer_of(package)
        for module in imports_of(path, package):
            if layer_of(module) > own:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, wrong
    assert LAYERS.keys() >= {p.stem for p in (ROOT / "inrcodec").glob("*.py")} - {"__init__"}


def test_every_family_has_a_preset_for_every_effort_and_the_registry_agrees():
    from inrcodec.training import TRAINABLE
    assert tuple(inrcodec.FAMILIES) == FAMILY_NAMES == tuple(TRAINABLE)
    for name, fit in TRAINABLE.items():  # each encode side is its decode side's subclass
        assert issubclass(fit, inrcodec.FAMILIES[name]) and fit.family_id == \
            inrcodec.FAMILIES[name].family_id
    for name, family in inrcodec.FAMILIES.items():
        assert family.name == name and set(PRESETS[name]) == set(inrcodec.EFFORTS)


def test_every_schema_key_is_accepted_by_every_entry_point():
    # Each setting with a value of its type, given as a string the way a command line does.
    samples = {int: "2", float: "0.5", bool: "true", str: "uniform"}
    training = {k: samples[t] for k, t in SCHEDULE_KEYS.items()}
    training.update(steps="40", lr="1e-3", qat_lr="1e-3", progressive_lr="1e-4", warmup="0.01",
                    lr_floor="0.01", batch="256", growth="2", optimizer="soap")
    options = EncodeOptions.from_settings(training, model="gridded")
    assert options.schedule().cycles == 2 and options.schedule().allocation == "uniform"
    fields = dict(effort="fast", bpp="1.5", encoding="positional:4", color="ycbcr",
                  coder="zstd", bits_per_weight="6", seed="3", device="cpu", threads="1",
                  compile="false", rows="2", cols="2", width="12", depth="2", overlap="0.1",
                  w0_first="20", w0="30")
    options = EncodeOptions.from_settings(fields, model="gridded")
    assert (options.bpp, options.seed, options.compile) == (1.5, 3, False)
    assert options.hparams == {"rows": 2, "cols": 2, "width": 12, "depth": 2,
                               "overlap": pytest.approx(0.1, abs=1e-4), "w0_first": 20.0,
                               "w0": 30.0}
    spec = "inr:gridded+" + "+".join(f"{k}={v}" for k, v in {**training, **fields}.items())
    assert parse_codec(spec).options.schedule() == \
        EncodeOptions.from_settings(training, model="gridded").schedule()
    # The issue's own example: a training setting in a bench spec.
    assert parse_codec("inr:gridded+cycles=2").options.schedule().cycles == 2


@pytest.mark.parametrize("settings, message", [
    ({"widht": "16"}, "unknown option(s) 'widht' for gridded; valid keys: model"),
    ({"cycles": "two"}, "cycles takes an int, not 'two'"),
    ({"cycles": "0"}, "cycles must be at least 1"),
    ({"width": "0"}, "width = 0 is outside [1, 2048]"),
    ({"allocation": "even"}, "allocation must be sensitivity or uniform"),
    ({"beta2": "1"}, "beta1 must be in [0, 1), beta2 in (0, 1)"),
    ({"optimizer": "sgd"}, "optimizer must be adam or soap, not 'sgd'"),
    ({"effort": "max"}, "unknown effort 'max'; choose from fast, default, best"),
    ({"compile": "maybe"}, "compile takes a bool"),
    ({"encoding": "fourier:x"}, "invalid literal"),
])
def test_bad_settings_fail_with_the_valid_choices(settings, message):
    with pytest.raises(inrcodec.InrInputError) as error:
        EncodeOptions.from_settings(settings, model="gridded")
    assert message in str(error.value)
    with pytest.raises(inrcodec.InrInputError):
        parse_codec("inr:gridded+" + "+".join(f"{k}={v}" for k, v in settings.items()))


def test_cli_takes_every_setting_through_hparam_and_refuses_others_before_work(tmp_path):
    from PIL import Image
    png = tmp_path / "in.png"
    Image.fromarray(crop()).save(png)
    runner = CliRunner()
    ok = runner.invoke(app, ["encode", str(png), "-o", str(tmp_path / "a.inr"), "--bpp", "2",
                             "--effort", "fast", "--hparam", "steps=20", "--hparam", "cycles=2",
                             "--hparam", "width=10", "--hparam", "compile=false", "--json"])
    assert ok.exit_code == 0, ok.output
    assert inrcodec.info((tmp_path / "a.inr").read_bytes())["hparams"]["width"] == 10
    bad = runner.invoke(app, ["encode", str(png), "-o", str(tmp_path / "b.inr"),
                              "--hparam", "cylces=2"])
    assert bad.exit_code == 1 and "valid keys" in bad.stderr and "cycles" in bad.stderr
    assert not (tmp_path / "b.inr").exists()
    twice = runner.invoke(app, ["encode", str(png), "-o", str(tmp_path / "c.inr"),
                                "--steps", "5", "--hparam", "steps=6"])
    assert twice.exit_code == 1 and "steps is given twice" in twice.stderr


def test_pillow_save_uses_the_same_schema(tmp_path):
    from PIL import Image
    im = Image.fromarray(crop())
    with pytest.raises(OSError, match="valid keys"):
        im.save(tmp_path / "a.inr", bpp=2.0, widht=16)
    im.save(tmp_path / "b.inr", options=EncodeOptions(bpp=2.0, effort="fast",
                                                      training={"steps": 10}, compile=False))
    assert inrcodec.info((tmp_path / "b.inr").read_bytes())["model"] == "latent"  # the default


def test_the_pillow_plugin_recognises_what_the_container_writes():
    from inrcodec import container, pillow
    assert pillow.MAGIC == container.MAGIC
    assert pillow.VERSIONS == tuple(range(1, container.VERSION + 1))


def test_the_package_exports_what_it_lists():
    assert sorted(inrcodec.__all__) == sorted(["InrError", "InrFormatError", "InrInputError",
                                               "InrWarning", "__version__", *inrcodec._LAZY])
    for name in inrcodec.__all__:
        assert getattr(inrcodec, name) is not None


def test_the_package_ships_every_subpackage_and_its_data():
    """A wheel (not an editable install) holds what the package imports: every folder of
    ``inrcodec`` with modules is a listed package and every data file a listed pattern."""
    import tomllib
    root = Path(inrcodec.__file__).parent
    config = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for init in root.rglob("__init__.py"):
        name = ".".join(init.parent.relative_to(root.parent).parts)
        assert name in listed, f"{name} is not in pyproject.toml's packages"
    patterns = config["package-data"]["inrcodec"]
    for data in root.rglob("*"):
        if data.is_file() and data.suffix not in (".py", ".pyc") and "__pycache__" not in data.parts:
            relative = data.relative_to(root)
            assert any(relative.match(p) for p in patterns), f"{relative} is not package data"
