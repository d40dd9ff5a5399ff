"""The report: plots and a self-contained HTML page a person can look at
(`stepsift report SCORES --candidates FILE --out DIR`)."""

from stepsift.report.write import DEFAULT_TOP, PAGE_NAME, ReportFiles, write_report

__all__ = ["DEFAULT_TOP", "PAGE_NAME", "ReportFiles", "write_report"]
