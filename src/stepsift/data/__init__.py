"""stepsift's data layer: read user data files into `Record`s, validate, write selections."""

from .formats import FORMATS, detect_format
from .images import MAX_IMAGE_PIXELS, check_image, load_image
from .index import LazyRecords, RecordIndex, index_records
from .reader import DataValidationError, ReadResult, format_problems, read_records
from .record import ROLES, Problem, Record, Source, Turn
from .writer import write_records, write_rejected

__all__ = [
    "FORMATS",
    "MAX_IMAGE_PIXELS",
    "ROLES",
    "DataValidationError",
    "LazyRecords",
    "Problem",
    "ReadResult",
    "Record",
    "RecordIndex",
    "Source",
    "Turn",
    "check_image",
    "detect_format",
    "format_problems",
    "index_records",
    "load_image",
    "read_records",
    "write_records",
    "write_rejected",
]
