"""Fields a person had corrected, kept against later imports (``contacts.rectified``).

``contacts set`` marks each field it changes (the names, an attribute) in the
contact's ``rectified`` object. An import that updates existing contacts
then leaves those fields as corrected: before the merge writes anything, the
staged row of such a contact loses the values for its rectified fields, and
the rows whose file disagreed with one are counted (``kept_rectified``).
``--overwrite-rectified`` skips this, and the file wins as before.

Only contacts with a correction are looked at (a partial index holds them),
so an import into a database where nobody asked for one does one index probe.
PostgreSQL does the same in its JSON functions (``jsonb_each``,
``jsonb_exists``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .db import is_postgres

if TYPE_CHECKING:
    from .db import Connection


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


# PostgreSQL: the same two statements. jsonb compares the attribute values
# as SQLite's json_each and json_extract do (they are all text); an empty
# object is '{}' in both, which the merge reads as "no attributes".
_PG_DISAGREE = """
SELECT count(*) FROM contacts c JOIN pg_temp.import_stage s ON s.key = c.email_key
WHERE c.rectified IS NOT NULL AND (
    (jsonb_exists(c.rectified::jsonb, 'first_name') AND s.first_name IS NOT NULL
        AND s.first_name != c.first_name)
    OR (jsonb_exists(c.rectified::jsonb, 'last_name') AND s.last_name IS NOT NULL
        AND s.last_name != c.last_name)
    OR EXISTS (SELECT 1 FROM jsonb_each(c.rectified::jsonb) r JOIN jsonb_each(s.attributes::jsonb) a ON a.key = r.key
               WHERE r.key NOT IN ('first_name', 'last_name')
                 AND a.value IS DISTINCT FROM c.attributes::jsonb -> r.key))
"""
_PG_KEEP = """
UPDATE pg_temp.import_stage SET
    first_name = CASE WHEN NOT jsonb_exists(c.rectified::jsonb, 'first_name') THEN import_stage.first_name END,
    last_name = CASE WHEN NOT jsonb_exists(c.rectified::jsonb, 'last_name') THEN import_stage.last_name END,
    attributes = (SELECT coalesce(jsonb_object_agg(a.key, a.value), '{}'::jsonb)::text
                  FROM jsonb_each(import_stage.attributes::jsonb) a
                  WHERE NOT jsonb_exists(c.rectified::jsonb, a.key))
FROM contacts c
WHERE c.email_key = import_stage.key AND c.rectified IS NOT NULL
"""


def keep_rectified(conn: Connection) -> int:
    """Make the staged rows leave rectified fields alone; how many disagreed with one."""
    if conn.execute(_ANY).fetchone() is None:
        return 0
    postgres = is_postgres(conn)
    (disagreed,) = conn.execute(_PG_DISAGREE if postgres else _DISAGREE).fetchone()
    conn.execute(_PG_KEEP if postgres else _KEEP)
    return int(disagreed)
