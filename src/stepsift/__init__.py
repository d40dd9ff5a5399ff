"""stepsift: pick the training data worth training on, by one-step utility.

The Python API mirrors the command line:

    from stepsift import ScoreSettings, score, select
    score("pool.jsonl", "anchors.jsonl", "scores.parquet", ScoreSettings())
    select("pool.jsonl", "scores.parquet", "20%", "subset.jsonl")
"""

from stepsift.data import DataValidationError, Record, read_records, write_records
from stepsift.engine.scoring import ScoreSummary, score
from stepsift.engine.settings import ScoreSettings
from stepsift.engine.store import read_scores
from stepsift.proxy.builtin import BuiltinProxy
from stepsift.proxy.warmup import WarmupSettings
from stepsift.select.keep import Keep, Selection, parse_keep
from stepsift.select.topk import select

__version__ = "0.1.0"

__all__ = [
    "BuiltinProxy",
    "DataValidationError",
    "Keep",
    "Record",
    "ScoreSettings",
    "ScoreSummary",
    "Selection",
    "WarmupSettings",
    "parse_keep",
    "read_records",
    "read_scores",
    "score",
    "select",
    "write_records",
]
