"""Multi-row INSERTs of several models in one round trip (the write path of every create).

`insert_rows(tasks, events)` writes every group with one `INSERT … VALUES (…), (…)` each, all
sent in one statement string (one transaction, even in autocommit): the rows are built with the fields' own save preparation (defaults,
`auto_now_add`, JSON), without the ORM's per-query compilation, which measured as a third of a
v2 submit's CPU. Other databases use `bulk_create`.
"""
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models.base import ModelState

__all__ = ["insert_rows", "guarded_inserts", "instance"]


def instance(model, values: dict):
    """A saved instance of `model` from its columns' values by attribute name (extra names become
    plain attributes), built as Django builds an unpickled instance: `Model.__init__` walks every
    field's descriptor, the largest cost of turning a cached or returned row into a model on the
    hot paths (authentication, a v2 submit's account, a worker's task)."""
    obj = model.__new__(model)
    state = ModelState()
    state.adding, state.db = False, DEFAULT_DB_ALIAS
    obj.__dict__.update(values)
    obj._state = state
    return obj

_columns: dict = {}
_typed_rows: dict = {}


def _fields(model):
    if model not in _columns:
        fields = [field for field in model._meta.concrete_fields if not getattr(field, "primary_key", False)
                  or not field.auto_created]
        _columns[model] = (fields, ", ".join(connection.ops.quote_name(field.column) for field in fields))
    return _columns[model]


def insert_rows(*groups) -> None:
    groups = [list(group) for group in groups if group]
    if not groups:
        return
    if connection.vendor != "postgresql":
        with transaction.atomic():
            for group in groups:
                type(group[0]).objects.bulk_create(group)
        return
    statements, params = [], []
    for group in groups:
        model = type(group[0])
        fields, columns = _fields(model)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        params += _values(group, fields)
        statements.append(f"INSERT INTO {model._meta.db_table} ({columns}) VALUES {', '.join([row] * len(group))}")
    with connection.cursor() as cursor:
        cursor.execute("; ".join(statements), params)


def _values(group, fields) -> list:
    params = []
    own = connections[DEFAULT_DB_ALIAS]  # not the proxy, which fields would consult for every value
    for obj in group:
        obj._prepare_related_fields_for_save(operation_name="insert_rows")
        params += [field.get_db_prep_save(field.pre_save(obj, True), own) for field in fields]
        obj._state.adding, obj._state.db = False, "default"
    return params


def guarded_inserts(groups, guard: str) -> tuple[list[str], list]:
    """Postgres: one `INSERT … SELECT … FROM (VALUES …) WHERE EXISTS (SELECT 1 FROM guard)` per
    group, to run as data-modifying CTEs of a statement whose CTE `guard` returns a row only when
    the rows are to be written (a task's winning transition). The values are typed by explicit
    casts, so the statement can be prepared."""
    statements, params = [], []
    for group in groups:
        model = type(group[0])
        fields, columns = _fields(model)
        row = _typed_rows.get(model)
        if row is None:  # db_type() renders the column type: once per model
            row = _typed_rows[model] = "(" + ", ".join(f"CAST(%s AS {field.db_type(connection)})" for field in fields) + ")"
        params += _values(group, fields)
        statements.append(f"INSERT INTO {model._meta.db_table} ({columns}) SELECT * FROM (VALUES"
                          f" {', '.join([row] * len(group))}) AS v WHERE EXISTS (SELECT 1 FROM {guard})")
    return statements, params
