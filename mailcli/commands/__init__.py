"""commands package."""

#: The largest count, offset or number a command line may give: the largest
#: integer the database stores (64 bits, on SQLite and PostgreSQL). A larger
#: one is refused as the option's range (exit 2) before it reaches a query.
LARGEST = 2**63 - 1


def given_list(value: str | None) -> str | None:
    """The callback of every ``--list``: the name as every command takes it,
    without the spaces around it (``mailcli.store.lists.given_name``)."""
    if value is None:
        return None
    from ..store.lists import given_name

    return given_name(value)
