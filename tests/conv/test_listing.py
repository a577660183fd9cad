"""`python -m convlab.conv`: the registered layers' table, read from the layers themselves."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
from torch import nn

from convlab.conv import CONV_LAYERS
from convlab.conv.listing import REFERENCE, main, rows, source, summary


def test_one_row_per_registered_layer_in_registry_order():
    table = rows()
    assert [row[0] for row in table] == [f"`{name}`" for name in CONV_LAYERS]
    assert all(row[1] and row[2] and row[3] for row in table)


def test_summary_is_the_module_docstring_line_without_the_name():
    from convlab.conv.unfold import UnfoldConv2d

    assert summary("unfold", UnfoldConv2d) == "im2col + one matrix multiply, autograd for the backward"
    assert summary("torch", nn.Conv2d) == REFERENCE
    assert source(UnfoldConv2d) == "`src/convlab/conv/unfold.py`"
    assert source(nn.Conv2d) == "`torch.nn.modules.conv`"


def test_a_layer_module_that_does_not_say_what_it_is_is_refused():
    module = types.ModuleType("somewhere", "A layer.\n\nMore.")
    layer = type("Odd", (nn.Module,), {"__module__": "somewhere"})
    sys.modules["somewhere"] = module
    try:
        with pytest.raises(ValueError, match="must open with '`odd`: '"):
            summary("odd", layer)
    finally:
        del sys.modules["somewhere"]


def test_main_prints_a_markdown_table(capsys):
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| name | class | what it is | defined in |"
    assert len(lines) == 2 + len(CONV_LAYERS)


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "convlab.conv"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| `native` | `NativeConv2d` |" in done.stdout
