"""The study report: one self-contained HTML page that says what the study found, and how sure it is.

Everything the report shows is computed in this package, by functions the tests call; the papermill
template (``workflow/notebooks/report.ipynb``) only calls them and displays what they return:

- ``load``: reading what the pipeline wrote, and refusing what would make a wrong report
- ``stats``: the corrected resampled t-test of each ablation, Holm's adjustment, the verdicts
- ``tables``: the leaderboard, against the book, the ablation and layer tables
- ``forms``: our training form beside a published result's, for the chapter's ranking
- ``card``: the page's opening paragraph and the study card
- ``figures``: every figure, and the PNG files
- ``render``: executing the template and converting it to offline HTML
- ``cli``: ``convbench report``

The template's modules are imported here, so that they belong to ``convbench report``'s code even
though only the template calls them: ``convbench.provenance`` follows imports from the ``cli``
module (through this package) to list the files whose edit reruns the report.
"""

from convbench.report import card, figures, load, tables

__all__ = ["card", "figures", "load", "stats", "tables"]
