"""Jobs as `GET /v1/jobs/{id}` serves them: JSON rendered once per revision, and its ETag."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from vlarena.jobs.records import JobRecord
from vlarena.jobs.store import JobStore


@dataclass(frozen=True)
class JobDocument:
    revision: str
    body: bytes

    def etag(self, job_id: str) -> str:
        return f'"{job_id}.{self.revision}"'


class JobDocuments:
    """Renders jobs to JSON, reusing the rendering while the job's revision has not moved.

    Clients poll running jobs; between two changes every poll would fetch, parse and serialise
    the same record again. Each read still asks Redis whether the revision moved, so nothing
    served is ever stale.
    """

    def __init__(self, store: JobStore, capacity: int = 4096) -> None:
        self.store = store
        self.capacity = capacity
        self._rendered: OrderedDict[str, JobDocument] = OrderedDict()

    async def get(self, job_id: str) -> JobDocument | None:
        cached = self._rendered.get(job_id)
        fields: dict[str, str] | None
        if cached is None:
            fields = await self.store.fields(job_id)
        else:
            fields = await self.store.fields_if_changed(job_id, cached.revision)
            if fields is None:
                self._rendered.move_to_end(job_id)
                return cached
        if not fields:
            self._rendered.pop(job_id, None)
            return None
        revision = fields.get("revision", "0")
        record = JobRecord.from_hash(fields)
        document = JobDocument(revision, record.model_dump_json(by_alias=True).encode())
        self._rendered[job_id] = document
        if len(self._rendered) > self.capacity:
            self._rendered.popitem(last=False)
        return document
