"""commands package."""

#: The largest count, offset or number a command line may give: the largest
#: integer the database stores (64 bits, on SQLite and PostgreSQL). A larger
#: one is refused as the option's range (exit 2) before it reaches a query.
LARGEST = 2**63 - 1
