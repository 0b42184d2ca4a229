# The C extension app/servicing/_rows.c (built where a C compiler is present): app/servicing/rows.py.

def rows(
    balance: int,
    numerator: int,
    denominator: int,
    emi: int,
    first: int,
    last: int,
    tenure: int,
    due_dates: tuple[str, ...],
    split: int,
    before: str,
    after: str,
    /,
) -> tuple[str, int]: ...
def paid(
    payments: bytes,
    first: int,
    outstanding: int,
    due_dates: tuple[str, ...],
    on_time: str,
    late: str,
    /,
) -> tuple[str, str]: ...
