"""stepsift: pick the training data worth training on, by one-step utility.

The Python API is what the command line calls (`stepsift/cli/` only parses arguments):

    from stepsift import ScoreSettings, report, score, select
    score("pool.jsonl", "anchors.jsonl", "scores.parquet", ScoreSettings())
    select("pool.jsonl", "scores.parquet", "20%", "subset.jsonl")
    report("scores.parquet", "pool.jsonl", "report/")
"""

from stepsift.data import DataValidationError, Record, read_records, write_records
from stepsift.engine.scoring import ScoreSummary, score
from stepsift.engine.settings import ScoreSettings
from stepsift.engine.store import read_scores
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings
from stepsift.select.harmful import Policy
from stepsift.select.keep import Keep, Selection, parse_keep

# `select` and `report` are also the names of subpackages: these imports load the
# subpackages first, then bind the names here to their entry functions
from stepsift.select.topk import select  # isort: skip
from stepsift.report import write_report as report  # isort: skip

__version__ = "0.1.0"

__all__ = [
    "BuiltinProxy",
    "DataValidationError",
    "Keep",
    "Policy",
    "Record",
    "ScoreSettings",
    "ScoreSummary",
    "Selection",
    "WarmupSettings",
    "parse_keep",
    "read_records",
    "read_scores",
    "report",
    "score",
    "select",
    "write_records",
]
