"""Writes from many threads committed together: each thread returns once its row is committed."""

from __future__ import annotations

import threading

from sqlalchemy.exc import DBAPIError


class GroupCommit:
    """Marks rows sent, each committed before its sending thread takes another message.

    The statement is compiled once by SQLAlchemy and run on a plain DB-API
    connection: going through SQLAlchemy for every message costs ten times the
    statement itself. Threads that finish while a commit is under way have
    their rows written together by the next commit (a group commit), so a
    commit per message does not become the limit on throughput.
    """

    class _Batch:
        def __init__(self) -> None:
            self.rows: list[dict] = []
            self.done = False
            self.error: BaseException | None = None

    def __init__(self, engine, statement) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql, self.order = str(compiled), compiled.positiontup if compiled.positional else None
        self.fixed = dict(compiled.params)  # the statement's literal values
        self.engine, self.connection = engine, None
        self._changed = threading.Condition()
        self._open, self._busy = self._Batch(), False

    def write(self, **params) -> None:
        """Return once the row is committed."""
        with self._changed:
            batch = self._open
            batch.rows.append({**self.fixed, **params})
            while not batch.done:
                if not self._busy:  # lead: commit the open batch, which holds this row
                    self._busy, self._open = True, self._Batch()
                    break
                self._changed.wait()
            else:
                if batch.error:
                    raise batch.error
                return
        try:
            self._commit(batch.rows)
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            with self._changed:
                batch.done, self._busy = True, False
                self._changed.notify_all()

    def _commit(self, rows: list[dict]) -> None:
        if self.connection is None:
            self.connection = self.engine.raw_connection()
        cursor = self.connection.cursor()
        try:
            if self.order:
                cursor.executemany(self.sql, [[row[name] for name in self.order] for row in rows])
            else:
                cursor.executemany(self.sql, rows)
            self.connection.commit()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            self._rollback()
            # The driver's own error, told as SQLAlchemy's, as every other write of the ledger tells it.
            raise DBAPIError.instance(self.sql, None, exc, self.engine.dialect.loaded_dbapi.Error) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            cursor.close()

    def _rollback(self) -> None:
        try:
            self.connection.rollback()
        except self.engine.dialect.loaded_dbapi.Error:
            self.connection.close()  # a connection in an unknown state is not reused
            self.connection = None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
