"""A held `POST /polls` commits its create without waiting for the WAL flush (services/polls.py
`NO_FLUSH`), and its answer, unless a synchronous ending came after it, first runs `flush_wal`
(`FLUSH_WAL`): that must leave the create durable. Checked on a Postgres of its own whose WAL
writer flushes every 10 s only, so that nothing else flushes the WAL in between."""
import psycopg2
import pytest

from tasks_app.services.polls import FLUSH_WAL, NO_FLUSH
from tests.servers import PostgresServer


@pytest.fixture(scope="module")
def cursor():
    server = PostgresServer(settings={"synchronous_commit": "on", "wal_writer_delay": "10s"}).start()
    connection = psycopg2.connect(host="127.0.0.1", port=server.port, user="root", dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE created (id serial PRIMARY KEY, name text)")
            yield cursor
    finally:
        connection.close()
        server.close()


def commit_unflushed(cursor) -> str:
    """Insert a row without waiting for its flush; the WAL position after its commit record."""
    for _ in range(5):  # the WAL writer may still flush a full page of its own accord: try again
        cursor.execute(NO_FLUSH + "INSERT INTO created (name) VALUES ('poll')")
        cursor.execute("SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()")
        written, unflushed = cursor.fetchone()
        if unflushed:
            return written
    raise AssertionError("every insert was flushed at once: NO_FLUSH had no effect")


def flushed(cursor, position: str) -> bool:
    cursor.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", [position])
    return cursor.fetchone()[0]


def test_flush_wal_makes_a_commit_that_did_not_wait_durable(cursor):
    written = commit_unflushed(cursor)
    assert not flushed(cursor, written)
    cursor.execute(FLUSH_WAL)
    assert flushed(cursor, written)


def test_a_transaction_that_only_takes_an_id_would_not_do(cursor):
    """Why FLUSH_WAL writes a record: Postgres waits for the flush of a commit only when its
    transaction wrote WAL before its commit record."""
    written = commit_unflushed(cursor)
    cursor.execute("SELECT txid_current()")
    assert not flushed(cursor, written)
    cursor.execute(FLUSH_WAL)
    assert flushed(cursor, written)
