"""Reports of VAT results: ``report.md``, a self-contained ``report.html`` and PNG figures.

``write_report(results, out_dir, title)`` renders results (see :mod:`vat_hf.report.render`);
``report_command`` is the body of ``vat-hf report RESULT.json [...] -o DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from vat_hf.report.render import (
    load_results,
    markdown_table,
    plot_coupling,
    plot_drift,
    plot_gain_tax,
    plot_radar,
    plot_trajectory,
    split_comparison,
    write_report,
)

__all__ = [
    "load_results",
    "markdown_table",
    "plot_coupling",
    "plot_drift",
    "plot_gain_tax",
    "plot_radar",
    "plot_trajectory",
    "report_command",
    "write_report",
]


def report_command(results: Sequence[Union[str, Path]], out_dir: Union[str, Path], title: Optional[str] = None,
                   echo=print) -> Dict[str, Path]:
    """``vat-hf report RESULT.json [...] -o DIR``: load the results (files, or folders of result
    JSON; a paired comparison file among them, or beside a results folder, is used for the
    comparison), print each one's table, write the report into ``out_dir`` and print where it went."""
    result_paths, comparison = split_comparison(results)
    loaded = load_results(result_paths)
    for r in loaded:
        echo(f"\n## {r['name']}\n")
        echo(markdown_table(r))
    paths = write_report(loaded, out_dir, title=title, comparison=comparison)
    echo("")
    for kind in ("markdown", "html"):
        echo(f"report {kind}: {paths[kind]}")
    echo(f"figures: {len(paths) - 2} PNG files in {Path(out_dir)}")
    return paths
