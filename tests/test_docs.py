"""The README and docs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import inrcodec
from inrcodec.presets import EFFORTS, PRESETS

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_two_setup_commands():
    demo, tests = readme_commands()[:2]
    assert "torch==2.13.0" in demo and demo.endswith("inr demo")
    assert "torch==2.13.0" in tests and tests.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()


def test_cli_doc_lists_every_familys_steps_per_effort():
    text = (ROOT / "docs" / "cli.md").read_text()
    for name, presets in PRESETS.items():
        steps = " | ".join(str(presets[e].schedule.steps) for e in EFFORTS)
        assert f"| `{name}` | {steps} |" in text, name


def test_cli_doc_lists_every_setting_of_the_schema():
    from inrcodec.options import FIELD_TYPES
    from inrcodec.presets import SCHEDULE_KEYS
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text[text.index("## Settings"):text.index("## `inr decode")]
    for key in [*FIELD_TYPES, *SCHEDULE_KEYS]:
        assert f"`{key}`" in section, key


def test_format_doc_lists_every_family_and_its_fields():
    text = (ROOT / "docs" / "format.md").read_text()
    for name, family in inrcodec.FAMILIES.items():
        assert f"id {family.family_id}: `{name}`" in text
        for field in family.schema.fields:
            assert f"| {field.name} |" in text, (name, field.name)


def test_api_examples_run(tmp_path, monkeypatch, capsys):
    """Every python block of docs/api.md runs as written."""
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i + 1}", "exec"), {})
    assert "refused:" in capsys.readouterr().out
