"""Fields a person had corrected, kept against later imports (``contacts.rectified``).

``contacts set`` marks each field it changes (the names, an attribute) in the
contact's ``rectified`` object. An import that updates existing contacts
then leaves those fields as corrected: before the merge writes anything, the
staged row of such a contact loses the values for its rectified fields, and
the rows whose file disagreed with one are counted (``kept_rectified``).
``--overwrite-rectified`` skips this, and the file wins as before.

Only contacts with a correction are looked at (a partial index holds them),
so an import into a database where nobody asked for one does one index probe.
"""

from __future__ import annotations

import sqlite3

_ANY = "SELECT 1 FROM contacts WHERE rectified IS NOT NULL LIMIT 1"

# The staged rows that would overwrite a rectified field with another value.
_DISAGREE = """
SELECT count(*) FROM contacts c JOIN temp.import_stage s ON s.key = c.email_key
WHERE c.rectified IS NOT NULL AND (
    (json_type(c.rectified, '$.first_name') IS NOT NULL AND s.first_name IS NOT NULL
        AND s.first_name != c.first_name)
    OR (json_type(c.rectified, '$.last_name') IS NOT NULL AND s.last_name IS NOT NULL
        AND s.last_name != c.last_name)
    OR EXISTS (SELECT 1 FROM json_each(c.rectified) r, json_each(s.attributes) a
               WHERE r.key = a.key AND r.key NOT IN ('first_name', 'last_name')
                 AND a.value IS NOT json_extract(c.attributes, '$."' || replace(r.key, '"', '""') || '"')))
"""

# Those rows without the rectified fields: a NULL name is "not in the file",
# and the attributes lose the corrected keys, so the merge keeps what was corrected.
_KEEP = """
UPDATE temp.import_stage SET
    first_name = CASE WHEN json_type(c.rectified, '$.first_name') IS NULL THEN import_stage.first_name END,
    last_name = CASE WHEN json_type(c.rectified, '$.last_name') IS NULL THEN import_stage.last_name END,
    attributes = (SELECT json_group_object(a.key, a.value) FROM json_each(import_stage.attributes) a
                  WHERE a.key NOT IN (SELECT key FROM json_each(c.rectified)))
FROM contacts c
WHERE c.email_key = import_stage.key AND c.rectified IS NOT NULL
"""


def keep_rectified(conn: sqlite3.Connection) -> int:
    """Make the staged rows leave rectified fields alone; how many disagreed with one."""
    if conn.execute(_ANY).fetchone() is None:
        return 0
    (disagreed,) = conn.execute(_DISAGREE).fetchone()
    conn.execute(_KEEP)
    return int(disagreed)
