"""Block upload (`/api/v1/upload/block/{block}/{start,files,finish,check}`), as Mimir's compactor serves it.

The upload's state lives in the bucket, in the block's directory: `uploading-meta.json` while files
are uploaded, `validation.json` (a heartbeat and, on failure, the error) while the finished upload is
validated, and `meta.json` once the block is complete. Validation runs in a worker thread and reads
the uploaded block with `BlockReader` from a scratch directory of links to the uploaded files.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mimird._fast.xorchunk import decode
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.ingester.ingester import update_bucket_index
from mimird.tsdb.block import BlockReader
from mimird.tsdb.block.meta import CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, BlockMeta, is_ulid
from mimird.util.durations import go_duration_ms
from mimird.util.failpoints import failpoint

if TYPE_CHECKING:
    from mimird.compactor.compactor import Compactor

log = logging.getLogger("mimird.compactor")

UPLOADING_META = "uploading-meta.json"
VALIDATION_FILE = "validation.json"
VALIDATION_HEARTBEAT = 60.0
VALIDATION_TIMEOUT = 300.0
MAX_META_BYTES = 1024 * 1024
FILE_PATH = re.compile(r"^(index|chunks/\d{6})$")
SHARD_ID = re.compile(r"^(\d+)_of_(\d+)$")
DROPPED_EXTERNAL_LABELS = ("__org_id__", "__ingester_id__", "__shard_id__")
COMPACTOR_SHARD_LABEL = "__compactor_shard_id__"

COMPLETE, NOT_STARTED, UPLOADING, VALIDATING, FAILED = "complete", "not started", "uploading", "validating", "failed"


def go_time_string(ms: int) -> str:
    """Unix milliseconds as Go's time.Time.String() prints a UTC time (`2023-11-14 00:59:45.001 +0000 UTC`)."""
    text = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    fraction = f"{ms % 1000:03d}".rstrip("0")
    return f"{text}{'.' + fraction if fraction else ''} +0000 UTC"


def rfc3339_ms(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BlockValidationError(Exception):
    """What is wrong with an uploaded block (stored in validation.json and shown by check)."""


def sanitize_meta(doc: dict, block_id: str, now_ms: int, max_block_bytes: int = 0) -> BlockMeta:
    """Check an uploaded meta.json and rewrite it as Mimir stores it; HTTPError 400 if it is not valid."""
    def bad(message: str) -> HTTPError:
        return HTTPError(400, message)

    thanos = doc.get("thanos") or {}
    if not isinstance(thanos, dict):
        raise bad("malformed request body")
    if int((thanos.get("downsample") or {}).get("resolution", 0) or 0) > 0:
        raise bad("block contains downsampled data")
    labels = dict(thanos.get("labels") or {})
    for name, value in list(labels.items()):
        if name == COMPACTOR_SHARD_LABEL:
            if value == "":
                del labels[name]
                continue
            match = SHARD_ID.match(str(value))
            if not match or not 0 < int(match.group(1)) <= int(match.group(2)):
                raise bad(f"invalid {COMPACTOR_SHARD_LABEL} external label: {json.dumps(value)}")
        elif name in DROPPED_EXTERNAL_LABELS:
            del labels[name]
        else:
            raise bad(f"unsupported external label: {name}")
    files = thanos.get("files")
    if not files:
        raise bad("missing thanos.files in block metadata")
    for entry in files:
        rel_path = str(entry.get("rel_path", ""))
        if rel_path == META_FILENAME:
            continue
        if not FILE_PATH.match(rel_path):
            raise bad(f"file with invalid path: {rel_path}")
        if int(entry.get("size_bytes", 0) or 0) <= 0:
            raise bad(f"file with invalid size: {rel_path}")
    if max_block_bytes > 0 and sum(int(f.get("size_bytes", 0) or 0) for f in files) > max_block_bytes:
        raise bad(f"block exceeds the maximum block size limit of {max_block_bytes} bytes")
    if doc.get("version") != 1:
        raise bad("version must be 1")
    min_time, max_time = int(doc.get("minTime", 0) or 0), int(doc.get("maxTime", 0) or 0)
    if min_time < 0 or max_time < 0 or max_time < min_time:
        raise bad(f"invalid minTime/maxTime: minTime={min_time}, maxTime={max_time}")
    if min_time > now_ms or max_time > now_ms:
        raise bad(f"block time(s) greater than the present: minTime={min_time} ({rfc3339_ms(min_time)}), "
                  f"maxTime={max_time} ({rfc3339_ms(max_time)})")
    clean = dict(doc)
    clean["ulid"] = block_id
    clean["compaction"] = {**(doc.get("compaction") or {}), "sources": [block_id]}
    clean["compaction"].pop("parents", None)
    clean["thanos"] = {**thanos, "labels": labels, "source": "upload"}
    try:
        return BlockMeta.from_json(clean)
    except ValueError:
        raise bad("malformed request body") from None


def validate_block(block_dir: Path, meta: BlockMeta, verify_chunks: bool = True) -> None:
    """Check an uploaded block as Mimir's VerifyBlock does; BlockValidationError says what is wrong.

    Every listed file is present with its size; the index reads (each section against its checksum);
    label sets are non-empty and sorted and series strictly ordered; every series has chunks, in time
    order, without overlaps, inside [minTime, maxTime); every chunk passes its checksum, decodes, is
    not empty, starts at its listed min time and has increasing timestamps (with `verify_chunks`).
    """
    for entry in meta.files:
        path = block_dir / entry.rel_path
        if entry.rel_path == META_FILENAME:
            continue
        if not path.exists():
            raise BlockValidationError(f"missing block file: {entry.rel_path}")
        if not path.is_file():
            raise BlockValidationError(f"not a file: {entry.rel_path}")
        if path.stat().st_size != entry.size_bytes:
            raise BlockValidationError(f"file size mismatch for {entry.rel_path}")
    try:
        with BlockReader(block_dir) as reader:
            previous = None
            for _, labels, chunks in reader.iter_series():
                _check_series(labels, previous, chunks, meta, reader if verify_chunks else None)
                previous = labels
    except ValueError as exc:
        raise BlockValidationError(f"error validating block: {exc}") from None


def _check_series(labels, previous, chunks, meta: BlockMeta, reader: BlockReader | None) -> None:
    if not labels:
        raise BlockValidationError("error validating block: series with empty label set")
    for index in range(1, len(labels)):
        if labels[index][0] <= labels[index - 1][0]:
            raise BlockValidationError(f"error validating block: series {labels}: labels not sorted or duplicated")
    for name, value in labels:
        if name == "" or value == "":
            raise BlockValidationError(f"error validating block: series {labels}: empty label name or value")
    if previous is not None and labels <= previous:
        raise BlockValidationError(f"error validating block: series {labels} out of order")
    if not chunks:
        raise BlockValidationError(f"error validating block: series {labels} has no chunks")
    last_maxt = None
    for c_mint, c_maxt, c_ref in chunks:
        if c_mint < meta.min_time or c_maxt >= meta.max_time:
            raise BlockValidationError(
                f"error validating block: series {labels}: chunk [{c_mint}, {c_maxt}] outside the block time "
                f"range [{meta.min_time}, {meta.max_time})")
        if c_maxt < c_mint or (last_maxt is not None and c_mint <= last_maxt):
            raise BlockValidationError(f"error validating block: series {labels}: chunks out of order or "
                                       "overlapping")
        last_maxt = c_maxt
        if reader is None:
            continue
        ts, _ = decode(reader.chunk(c_ref))
        if len(ts) == 0:
            raise BlockValidationError(f"error validating block: series {labels}: empty chunk {c_ref:#x}")
        if ts[0] != c_mint or ts[-1] != c_maxt:
            raise BlockValidationError(f"error validating block: series {labels}: chunk {c_ref:#x} samples "
                                       f"[{ts[0]}, {ts[-1]}] do not match its index entry [{c_mint}, {c_maxt}]")
        if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
            raise BlockValidationError(f"error validating block: series {labels}: chunk {c_ref:#x} "
                                       "timestamps are not increasing")


def _internal_errors(handler):
    """Answer an unexpected failure as Mimir does: 500 `internal server error (id <hex ns>)`, logged with the id."""
    @functools.wraps(handler)
    async def wrapped(self, request: Request) -> Response:
        try:
            return await handler(self, request)
        except HTTPError:
            raise
        except Exception as exc:
            request_id = time.time_ns().to_bytes(8, "big").hex()
            log.error("block upload failed: op=%s request_id=%s err=%s: %s", handler.__name__, request_id,
                      type(exc).__name__, exc)
            raise HTTPError(500, f"internal server error (id {request_id})") from None
    return wrapped


class BlockUploadAPI:
    """The four block upload handlers, bound to the compactor."""

    def __init__(self, compactor: Compactor):
        self.compactor = compactor
        self.bucket = compactor.bucket
        self._tasks: set[asyncio.Task] = set()

    # shared checks and state
    def _params(self, request: Request) -> tuple[str, str]:
        block_id = request.params.get("block", "")
        if not is_ulid(block_id):
            raise HTTPError(400, "invalid block ID")
        if not request.tenants:
            raise HTTPError(400, "invalid tenant ID")
        tenant = request.tenant
        if not self.compactor.overrides.get(tenant, "compactor_block_upload_enabled"):
            raise HTTPError(400, "block upload is disabled")
        return block_id, tenant

    def _state(self, tenant: str, block_id: str) -> tuple[str, dict | None, dict | None]:
        prefix = f"{tenant}/{block_id}/"
        if self.bucket.exists(prefix + META_FILENAME):
            return COMPLETE, None, None
        try:
            meta = json.loads(self.bucket.get(prefix + UPLOADING_META))
        except FileNotFoundError:
            return NOT_STARTED, None, None
        try:
            validation = json.loads(self.bucket.get(prefix + VALIDATION_FILE))
        except FileNotFoundError:
            return UPLOADING, meta, None
        if validation.get("Error"):
            return FAILED, meta, validation
        if time.time() * 1000 - int(validation.get("LastUpdate", 0)) < VALIDATION_TIMEOUT * 1000:
            return VALIDATING, meta, validation
        return UPLOADING, meta, validation  # a stale validation: the upload may be finished again

    def _check_state(self, tenant: str, block_id: str, require_started: bool) -> dict | None:
        state, meta, _ = self._state(tenant, block_id)
        if state == COMPLETE:
            raise HTTPError(409, "block already exists")
        if state == VALIDATING:
            raise HTTPError(400, "block validation in progress")
        if state == FAILED:
            raise HTTPError(400, "block validation failed")
        if state == NOT_STARTED and require_started:
            raise HTTPError(404, "block upload not started")
        return meta

    def _write_validation(self, tenant: str, block_id: str, error: str = "") -> None:
        doc = {"LastUpdate": int(time.time() * 1000), "Error": error}
        self.bucket.put(f"{tenant}/{block_id}/{VALIDATION_FILE}", json.dumps(doc).encode())

    # handlers
    @_internal_errors
    async def start(self, request: Request) -> Response:
        """POST /api/v1/upload/block/{block}/start: check meta.json and store it as uploading-meta.json."""
        block_id, tenant = self._params(request)
        self._check_state(tenant, block_id, require_started=False)
        if len(request.body) > MAX_META_BYTES:
            raise HTTPError(413, f"The block metadata was too large (maximum size allowed is {MAX_META_BYTES} "
                                 "bytes)")
        try:
            doc = json.loads(request.body)
            if not isinstance(doc, dict) or ("ulid" in doc and not is_ulid(str(doc["ulid"]))):
                raise ValueError("not a block meta")
        except ValueError:
            raise HTTPError(400, "malformed request body") from None
        limits = self.compactor.overrides.for_tenant(tenant)
        meta = sanitize_meta(doc, block_id, int(time.time() * 1000), limits["compactor_block_upload_max_block_size_bytes"])
        self._check_time_range(tenant, meta)
        self.bucket.put(f"{tenant}/{block_id}/{UPLOADING_META}", meta.dumps().encode())
        return Response(200)

    def _check_time_range(self, tenant: str, meta: BlockMeta) -> None:
        retention = self.compactor.overrides.get(tenant, "compactor_blocks_retention_period")
        if retention > 0 and meta.max_time < (time.time() - retention) * 1000:
            raise HTTPError(422, f"block max time ({go_time_string(meta.max_time)}) older than retention period")
        largest = max(self.compactor.ranges_ms)
        if meta.max_time - meta.min_time > largest:
            raise HTTPError(422, f"block duration ({go_duration_ms(meta.max_time - meta.min_time)}) is larger than "
                                 f"max configured compactor time range ({go_duration_ms(largest)})")
        if meta.max_time > meta.min_time and meta.min_time // largest != (meta.max_time - 1) // largest:
            raise HTTPError(422, "block time range crosses boundary of configured compactor time range "
                                 f"({go_duration_ms(largest)})")

    @_internal_errors
    async def files(self, request: Request) -> Response:
        """POST .../files?path=index|chunks/NNNNNN: store one file of the block."""
        block_id, tenant = self._params(request)
        path = request.query.get("path", [""])[0]
        if not path:
            raise HTTPError(400, "missing or invalid file path")
        if path.rsplit("/", 1)[-1] == META_FILENAME:
            raise HTTPError(400, f"{META_FILENAME} is not allowed")
        if not FILE_PATH.match(path):
            raise HTTPError(400, f"invalid path: {json.dumps(path)}")
        if not request.body:
            raise HTTPError(400, "file cannot be empty")
        doc = self._check_state(tenant, block_id, require_started=True)
        sizes = {str(f.get("rel_path")): int(f.get("size_bytes", 0) or 0)
                 for f in (doc.get("thanos") or {}).get("files") or []}
        if path not in sizes:
            raise HTTPError(400, "unexpected file")
        if sizes[path] != len(request.body):
            raise HTTPError(400, f"file size doesn't match {META_FILENAME}")
        await asyncio.to_thread(self.bucket.put, f"{tenant}/{block_id}/{path}", request.body)
        return Response(200)

    @_internal_errors
    async def finish(self, request: Request) -> Response:
        """POST .../finish: start validating the block in the background (429 above the concurrency limit)."""
        block_id, tenant = self._params(request)
        doc = self._check_state(tenant, block_id, require_started=True)
        compactor = self.compactor
        if not compactor.overrides.get(tenant, "compactor_block_upload_validation_enabled"):
            await asyncio.to_thread(self._complete, tenant, block_id, BlockMeta.from_json(doc))
            return Response(200)
        limit = compactor.max_validations
        with compactor.validation_lock:
            if limit > 0 and compactor.validations_in_flight >= limit:
                raise HTTPError(429, f"too many block upload validations in progress, limit is {limit}")
            compactor.validations_in_flight += 1
        try:
            self._write_validation(tenant, block_id)
            meta = BlockMeta.from_json(doc)
        except BaseException:
            with compactor.validation_lock:
                compactor.validations_in_flight -= 1
            raise
        task = asyncio.get_running_loop().create_task(self._validate_and_complete(tenant, block_id, meta))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Response(200)

    async def _validate_and_complete(self, tenant: str, block_id: str, meta: BlockMeta) -> None:
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(tenant, block_id))
        try:
            try:
                await asyncio.to_thread(self._validate, tenant, block_id, meta)
            except BlockValidationError as exc:
                error = str(exc)
            except Exception as exc:  # a bug or I/O error fails the upload rather than leaving it hanging
                error = f"{type(exc).__name__}: {exc}"
            else:
                error = ""
        finally:
            heartbeat.cancel()
            with self.compactor.validation_lock:
                self.compactor.validations_in_flight -= 1
        if error:
            logging.getLogger("mimird.compactor").warning("block upload validation failed: tenant=%s block=%s "
                                                          "err=%s", tenant, block_id, error)
            self._write_validation(tenant, block_id, error)
            return
        await asyncio.to_thread(self._complete, tenant, block_id, meta)

    async def _heartbeat(self, tenant: str, block_id: str) -> None:
        while True:
            await asyncio.sleep(VALIDATION_HEARTBEAT)
            self._write_validation(tenant, block_id)

    def _validate(self, tenant: str, block_id: str, meta: BlockMeta) -> None:
        scratch = self.compactor.validation_dir / f"{tenant}-{block_id}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            uploaded = self.bucket.local_path(f"{tenant}/{block_id}").absolute()
            for name in (INDEX_FILENAME, CHUNKS_DIRNAME):
                if (uploaded / name).exists():
                    os.symlink(uploaded / name, scratch / name)
            (scratch / META_FILENAME).write_text(meta.dumps())
            limits = self.compactor.overrides.for_tenant(tenant)
            max_bytes = limits["compactor_block_upload_max_block_size_bytes"]
            if max_bytes > 0 and sum(f.size_bytes for f in meta.files) > max_bytes:
                raise BlockValidationError(f"block exceeds the maximum block size limit of {max_bytes} bytes")
            failpoint("upload-during-validation")
            validate_block(scratch, meta, limits["compactor_block_upload_verify_chunks"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _complete(self, tenant: str, block_id: str, meta: BlockMeta) -> None:
        prefix = f"{tenant}/{block_id}/"
        self.bucket.put(prefix + META_FILENAME, meta.dumps().encode())
        failpoint("upload-after-meta")
        self.bucket.delete(prefix + UPLOADING_META)
        self.bucket.delete(prefix + VALIDATION_FILE)
        update_bucket_index(self.bucket, tenant)
        log.info("block upload completed: tenant=%s block=%s", tenant, block_id)

    @_internal_errors
    async def check(self, request: Request) -> Response:
        """GET .../check: {"result": "uploading"|"validating"|"complete"|"failed", "error": ...}."""
        block_id, tenant = self._params(request)
        state, _, validation = self._state(tenant, block_id)
        if state == NOT_STARTED:
            raise HTTPError(404, "block doesn't exist")
        result = {"result": state}
        if state == FAILED:
            result["error"] = validation.get("Error", "")
        return Response.json(result)

    async def close(self) -> None:
        """Wait for running validations (on shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
