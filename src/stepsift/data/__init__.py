"""stepsift's data layer: read user data (JSONL/JSON files, Parquet/Arrow tables) into
`Record`s, validate, write selections."""

from .formats import FORMATS, detect_format
from .images import MAX_IMAGE_PIXELS, EmbeddedImage, check_image, load_image
from .index import LazyRecords, RecordIndex, index_records
from .inputs import read_records
from .reader import DataValidationError, ReadResult, format_problems
from .record import ROLES, Problem, Record, Source, Turn
from .tabular import TableError, is_table
from .writer import write_records, write_rejected

__all__ = [
    "FORMATS",
    "MAX_IMAGE_PIXELS",
    "ROLES",
    "DataValidationError",
    "EmbeddedImage",
    "LazyRecords",
    "Problem",
    "ReadResult",
    "Record",
    "RecordIndex",
    "Source",
    "TableError",
    "Turn",
    "check_image",
    "detect_format",
    "format_problems",
    "index_records",
    "is_table",
    "load_image",
    "read_records",
    "write_records",
    "write_rejected",
]
