"""Reading contact files for ``mailcli import``: the reader, its row parser,
and the worker processes that read a big file in two halves.

The store never imports this package; both use the row types of
:mod:`mailcli.importrows`. How a file flows:

* :mod:`~mailcli.importer.piped` copies standard input or a pipe to a
  private file first, as the file is read more than once;
* :mod:`~mailcli.importer.reader` opens it (:func:`open_csv`): the format
  from :mod:`~mailcli.importer.detect`, the columns from
  :mod:`~mailcli.importer.columns`, the lines decoded by
  :mod:`~mailcli.importer.decoding` (UTF-8 or cp1252 line by line when the
  encoding was detected);
* :mod:`~mailcli.importer.rowparser` turns each record into a staged row, a
  reject or an opt-out, with the values of :mod:`~mailcli.importer.values`;
* :mod:`~mailcli.importer.feed` groups the rows into batches for
  :func:`mailcli.store.imports.import_batches`, read in this process or, for
  a big file, by the two processes of :mod:`~mailcli.importer.workers`;
* :mod:`~mailcli.importer.rejects` writes ``--rejects FILE``.
"""

from mailcli.importer.columns import (
    ColumnPlan,
    attribute_name,
    header_key,
    parse_map_options,
    plan_columns,
)
from mailcli.importer.detect import HEAD_BYTES, CsvFormat, detect_encoding, detect_format
from mailcli.importer.feed import ImportFeed
from mailcli.importer.reader import CsvSource, ImportRow, open_csv
from mailcli.importer.rejects import RejectsFile
from mailcli.importer.values import parse_consent_time, truncate_ip
from mailcli.importrows import OptOut, RowReject

__all__ = [
    "HEAD_BYTES",
    "ColumnPlan",
    "CsvFormat",
    "CsvSource",
    "ImportFeed",
    "ImportRow",
    "OptOut",
    "RejectsFile",
    "RowReject",
    "attribute_name",
    "detect_encoding",
    "detect_format",
    "header_key",
    "open_csv",
    "parse_consent_time",
    "parse_map_options",
    "plan_columns",
    "truncate_ip",
]
