"""The Lua scripts that change job state atomically in Redis, one per kind of change.

Each script that writes starts with the same prelude: the key builders of `vlarena.jobs.keys`,
the allowed transitions of `vlarena.jobs.states`, and helpers to move a job between states and
to record events (a script that only reads gets the key builders alone). Scripts read the clock
with `TIME`, so leases and deadlines follow Redis's clock, not the workers'. Arguments common
to all scripts: ARGV[1] the key prefix, ARGV[2] the stream cap.
Redis does not roll back a script that errors, so every check comes before the first write.
A script whose reply was lost (a timeout, a dropped connection) may be sent again: those that
move a job (create with a submission key, claim, renew, finish, cancel, reap) then change
nothing more and answer as the first time did. Every write of an attempt shows its fencing
token, the attempt number and the random token its worker drew when it claimed it.
The retention of finished jobs is written into each script's source (`RETENTION_MS`).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from vlarena.jobs.keys import lua_key_functions
from vlarena.jobs.ownership import MODEL_ACCESS
from vlarena.jobs.spec import JobType
from vlarena.jobs.states import TERMINAL_STATES, TRANSITIONS


def _transition_table() -> str:
    rows = []
    for source, targets in TRANSITIONS.items():
        allowed = ", ".join(f"{t.value} = true" for t in sorted(targets))
        rows.append(f"  {source.value} = {{{allowed}}},")
    terminal = ", ".join(f"{s.value} = true" for s in sorted(TERMINAL_STATES))
    types = ", ".join(f"'{t.value}'" for t in JobType)
    return (
        "local ALLOWED = {\n"
        + "\n".join(rows)
        + "\n}\n"
        + f"local TERMINAL = {{{terminal}}}\nlocal JOB_TYPES = {{{types}}}"
    )


PRELUDE = f"""
local P = ARGV[1]
local MAXLEN = ARGV[2]
{lua_key_functions()}
{_transition_table()}
{MODEL_ACCESS}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A lifecycle event goes to the events stream and, as a line, to the logs stream.
local function emit(id, level, reason, message, attempt)
  redis.call('XADD', k_job_events(id), 'MAXLEN', '~', MAXLEN, '*',
    'level', level, 'reason', reason, 'message', message, 'attempt', attempt)
  redis.call('XADD', k_job_logs(id), 'MAXLEN', '~', MAXLEN, '*',
    'level', level, 'message', message, 'attempt', attempt, 'source', 'platform')
end

-- Every change of a job bumps its revision (readers cache and tag what they serve by it).
local function touch(id, now)
  redis.call('HSET', k_job(id), 'updatedAt', now)
  redis.call('HINCRBY', k_job(id), 'revision', 1)
end

local function check_move(id, from, to)
  if not (ALLOWED[from] and ALLOWED[from][to]) then
    error('job ' .. id .. ': illegal transition ' .. tostring(from) .. ' -> ' .. to)
  end
end

-- A finished job's record, streams and idempotency key expire together after the retention
-- (its results stay on disk); `jobs:expiring` says when, so its index entries can go too.
local function retire(id, now)
  if RETENTION_MS <= 0 then return end
  local jk = k_job(id)
  local owner, submission = unpack(redis.call('HMGET', jk, 'owner', 'submissionId'))
  redis.call('PEXPIRE', jk, RETENTION_MS)
  redis.call('PEXPIRE', k_job_logs(id), RETENTION_MS)
  redis.call('PEXPIRE', k_job_events(id), RETENTION_MS)
  if owner and submission and submission ~= '' then
    redis.call('PEXPIRE', k_submission(owner, submission), RETENTION_MS)
  end
  redis.call('ZADD', k_jobs_expiring(), now + RETENTION_MS, id)
end

-- Drops from every index up to `batch` jobs whose retention has passed; returns how many.
-- The record is gone by then, so its type is unknown: each type's index is cleared.
local function forget_expired(now, batch)
  local ids = redis.call('ZRANGEBYSCORE', k_jobs_expiring(), '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do
    redis.call('ZREM', k_jobs_expiring(), id)
    redis.call('ZREM', k_jobs_all(), id)
    for _, job_type in ipairs(JOB_TYPES) do
      redis.call('ZREM', k_jobs_type(job_type), id)
      for state, _ in pairs(TERMINAL) do
        redis.call('ZREM', k_jobs_state(state), id)
        redis.call('ZREM', k_jobs_state_type(state, job_type), id)
      end
    end
  end
  return #ids
end

local function move(id, from, to, now)
  check_move(id, from, to)
  local jk = k_job(id)
  local job_type, queue = unpack(redis.call('HMGET', jk, 'type', 'queue'))
  redis.call('HSET', jk, 'state', to)
  touch(id, now)
  redis.call('ZREM', k_jobs_state(from), id)
  redis.call('ZREM', k_jobs_state_type(from, job_type), id)
  redis.call('ZADD', k_jobs_state(to), 0, id)
  redis.call('ZADD', k_jobs_state_type(to, job_type), 0, id)
  if TERMINAL[to] or to == 'RUNNING' then
    redis.call('ZREM', k_queue(queue), id)
    redis.call('ZREM', k_delayed(), id)
  end
  if TERMINAL[to] then
    redis.call('HSET', jk, 'finishedAt', now)
    redis.call('ZREM', k_leases(), id)
    retire(id, now)
  end
end

-- Queue order: priority first (higher runs first), then submission order (`sequence`).
local function enqueue(id)
  local queue, priority, sequence = unpack(redis.call(
    'HMGET', k_job(id), 'queue', 'priority', 'sequence'))
  redis.call('ZADD', k_queue(queue), -tonumber(priority) * 2 ^ 40 + tonumber(sequence), id)
  return queue
end

-- Closes the record of attempt n: when and how it ended, and how far it got.
local function end_attempt(id, attempt, now, outcome, err)
  local jk = k_job(id)
  local field = 'attempt:' .. attempt
  local raw = redis.call('HGET', jk, field)
  if not raw then return end
  local record = cjson.decode(raw)
  record['finishedAt'] = now
  record['outcome'] = outcome
  if err and err ~= '' then record['error'] = err end
  -- How far it got: its last progress report or its last checkpoint, whichever is later.
  for _, field in ipairs({{"progress", "checkpoint"}}) do
    local raw = redis.call('HGET', jk, field)
    if raw then
      local r = cjson.decode(raw)
      if tostring(r['attempt']) == tostring(attempt) and type(r['samplesSeen']) == 'number'
          and r['samplesSeen'] > (record['samplesSeen'] or 0) then
        record['samplesSeen'] = r['samplesSeen']
      end
    end
  end
  redis.call('HSET', jk, field, cjson.encode(record))
end

local function set_error(id, code, message)
  redis.call('HSET', k_job(id), 'error', cjson.encode({{code = code, message = message}}))
end

local function deadline_passed(id, now)
  local deadline = redis.call('HGET', k_job(id), 'deadlineAt')
  return deadline and deadline ~= '' and now >= tonumber(deadline)
end

-- Whether attempt `attempt` holding `token` is the job's current attempt: the attempt number
-- alone could be handed out twice by a Redis that lost its last writes (an AOF rollback), the
-- random token drawn by the claiming worker cannot.
local function holds(id, attempt, token)
  local current, current_token = unpack(redis.call('HMGET', k_job(id), 'attempt', 'attemptToken'))
  return current == attempt and (current_token or '') == token
end

-- The wait before retry number `retries` + 1: the base doubled per retry already made, capped.
local function backoff(retries, base_ms, cap_ms)
  return math.min(base_ms * 2 ^ retries, cap_ms)
end

-- Puts a job that waits for a retry back in its queue now, or after `delay` ms; returns the
-- queue to wake a worker for ('' when delayed).
local function requeue(id, now, delay)
  if delay > 0 then
    redis.call('ZADD', k_delayed(), now + delay, id)
    return ''
  end
  return enqueue(id)
end
"""

# ARGV: prefix, maxlen, id, submission key ('' for none), fields JSON, priority, queue,
# worker ttl ms. Returns {1, id} when created, {0, existing id} for a known submission.
CREATE = """
local id = ARGV[3]
local submission_key = ARGV[4]
local fields = cjson.decode(ARGV[5])
local queue = ARGV[7]
local worker_ttl = tonumber(ARGV[8])
if submission_key ~= '' then
  local existing = redis.call('GET', submission_key)
  if existing then return {0, existing} end
  redis.call('SET', submission_key, id)
end
local now = now_ms()
local jk = k_job(id)
for name, value in pairs(fields) do
  redis.call('HSET', jk, name, value)
end
redis.call('HSET', jk, 'id', id, 'state', 'QUEUED', 'queue', queue, 'priority', ARGV[6],
  'sequence', redis.call('INCR', k_sequence()),
  'attempt', 0, 'retries', 0, 'createdAt', now, 'updatedAt', now, 'revision', 1)
redis.call('ZADD', k_jobs_all(), 0, id)
redis.call('ZADD', k_jobs_type(fields['type']), 0, id)
redis.call('ZADD', k_jobs_state('QUEUED'), 0, id)
redis.call('ZADD', k_jobs_state_type('QUEUED', fields['type']), 0, id)
enqueue(id)
emit(id, 'info', 'Created', 'job created; waiting in queue ' .. queue, 0)
local live = redis.call('ZCOUNT', k_workers_queue(queue), now - worker_ttl, '+inf')
if live == 0 then
  emit(id, 'warning', 'NoWorker', 'no worker takes jobs from queue ' .. queue ..
    ' right now; the job stays QUEUED until one starts', 0)
end
return {1, id}
"""

# ARGV: prefix, maxlen, queue, worker id, lease ms, attempt token.
# Returns {id, attempt} of the job now RUNNING under a fresh lease, or false.
CLAIM = """
local queue = ARGV[3]
local worker = ARGV[4]
local lease_ms = tonumber(ARGV[5])
local token = ARGV[6]
local taken = redis.call('GET', k_claim(token))
if taken then return cjson.decode(taken) end
local now = now_ms()
while true do
  local popped = redis.call('ZPOPMIN', k_queue(queue))
  if #popped == 0 then return false end
  local id = popped[1]
  local jk = k_job(id)
  local state = redis.call('HGET', jk, 'state')
  if state == 'QUEUED' or state == 'RETRYING' then
    if deadline_passed(id, now) then
      move(id, state, 'FAILED', now)
      set_error(id, 'DeadlineExceeded', 'activeDeadlineSeconds passed before the job could resume')
      emit(id, 'warning', 'DeadlineExceeded', 'activeDeadlineSeconds passed', 0)
    else
      move(id, state, 'RUNNING', now)
      local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
      local resumed_from = 0
      local checkpoint = redis.call('HGET', jk, 'checkpoint')
      if checkpoint then resumed_from = cjson.decode(checkpoint)['samplesSeen'] or 0 end
      redis.call('HSET', jk, 'worker', worker, 'attemptToken', token,
        'attempt:' .. attempt, cjson.encode({
        number = attempt, worker = worker, startedAt = now, outcome = 'running',
        resumedFromSamples = resumed_from}))
      if not redis.call('HGET', jk, 'startedAt') then
        redis.call('HSET', jk, 'startedAt', now)
        local deadline = redis.call('HGET', jk, 'activeDeadlineSeconds')
        if deadline then
          redis.call('HSET', jk, 'deadlineAt', now + 1000 * tonumber(deadline))
        end
      end
      redis.call('ZADD', k_leases(), now + lease_ms, id)
      local message = 'attempt ' .. attempt .. ' started on worker ' .. worker
      if resumed_from ~= 0 then
        message = message .. ', resuming from the checkpoint at ' .. resumed_from .. ' samples'
      end
      emit(id, 'info', 'Started', message, attempt)
      redis.call('SET', k_claim(token), cjson.encode({id, attempt}), 'PX', lease_ms)
      return {id, attempt}
    end
  end
end
"""

# ARGV: prefix, maxlen, id, attempt, attempt token, lease ms.
# Returns the job's state (RUNNING or CANCELLING), 'DEADLINE', or 'FENCED' when this attempt
# no longer owns the job.
RENEW = """
local id = ARGV[3]
local jk = k_job(id)
local state = redis.call('HGET', jk, 'state')
if not holds(id, ARGV[4], ARGV[5]) or (state ~= 'RUNNING' and state ~= 'CANCELLING') then
  return 'FENCED'
end
local now = now_ms()
redis.call('ZADD', k_leases(), now + tonumber(ARGV[6]), id)
if deadline_passed(id, now) then return 'DEADLINE' end
return state
"""

# ARGV: prefix, maxlen, id, attempt, attempt token, payload JSON {set = {field = string}, logs =
# {{level, message}}, events = {{level, reason, message}}}. Returns 1, or 0 when fenced off.
WRITE = """
local id = ARGV[3]
local jk = k_job(id)
local attempt, state = unpack(redis.call('HMGET', jk, 'attempt', 'state'))
if not holds(id, ARGV[4], ARGV[5]) or (state ~= 'RUNNING' and state ~= 'CANCELLING') then
  return 0
end
local payload = cjson.decode(ARGV[6])
local now = now_ms()
if payload['set'] then
  for name, value in pairs(payload['set']) do redis.call('HSET', jk, name, value) end
end
touch(id, now)
if payload['logs'] then
  for _, line in ipairs(payload['logs']) do
    redis.call('XADD', k_job_logs(id), 'MAXLEN', '~', MAXLEN, '*',
      'level', line[1], 'message', line[2], 'attempt', attempt, 'source', 'job')
  end
end
if payload['events'] then
  for _, event in ipairs(payload['events']) do emit(id, event[1], event[2], event[3], attempt) end
end
return 1
"""

# ARGV: prefix, maxlen, id, attempt, attempt token, outcome, payload JSON, retry backoff base
# ms, cap ms. outcome: succeeded | failed (retried after a backoff) | rejected (bad input) |
# deterministic (another attempt would fail the same way) | cancelled | preempted | deadline.
# payload: {message, code (the error's code, for failed, rejected and deterministic), result,
# metrics, models = {{name, family, status, record = JSON object of the version}}}.
# Returns {new state, queue to wake or '', delay ms}, or {'FENCED', '', 0}. Sent again after
# its reply was lost, it answers as it did the first time and changes nothing.
FINISH = """
local id = ARGV[3]
local jk = k_job(id)
local outcome = ARGV[6]
local payload = cjson.decode(ARGV[7])
local attempt, state, retries, max_retries = unpack(redis.call(
  'HMGET', jk, 'attempt', 'state', 'retries', 'maxRetries'))
if not holds(id, ARGV[4], ARGV[5]) then return {'FENCED', '', 0} end
if state ~= 'RUNNING' and state ~= 'CANCELLING' then
  -- Ended already: by this very call, whose reply was lost (answer as then), or by the reaper
  -- (outcome 'lost': this attempt is fenced off).
  local record = redis.call('HGET', jk, 'attempt:' .. attempt)
  local ended = record and cjson.decode(record)['outcome']
  if ended and ended ~= 'running' and ended ~= 'lost' then return {state, '', 0} end
  return {'FENCED', '', 0}
end
local now = now_ms()
local message = payload['message'] or ''

if outcome == 'succeeded' then
  move(id, state, 'SUCCEEDED', now)
  end_attempt(id, attempt, now, 'succeeded', '')
  redis.call('HSET', jk, 'result', payload['result'], 'metrics', payload['metrics'])
  redis.call('HDEL', jk, 'error')
  -- A name belongs to its owner (vlarena.jobs.ownership): checked again here, since a job's
  -- names are not all known when it is submitted.
  local owner = redis.call('HGET', jk, 'owner') or ''
  local team, admin = unpack(redis.call('HMGET', k_caller(owner), 'team', 'admin'))
  for _, m in ipairs(payload['models'] or {}) do
    local access = model_access(m['name'], owner, team or '', admin == '1')
    if access == 'new' then own_model(m['name'], owner, team or '', now) end
    if access == 'ok' or access == 'new' then
      local mk = k_model(m['name'])
      local version = redis.call('HINCRBY', mk, 'latestVersion', 1)
      redis.call('HSETNX', mk, 'createdAt', now)
      redis.call('HSET', mk, 'name', m['name'], 'family', m['family'], 'updatedAt', now)
      redis.call('ZADD', k_models(), 0, m['name'])
      -- m['record'] is a JSON object built in Python; splicing the fields known only here into
      -- it keeps its numbers exactly as written (a cjson round trip would round them).
      local record = '{"version":' .. version .. ',"createdAt":' .. now .. ',"sourceJob":' ..
        cjson.encode(id) .. ',' .. string.sub(m['record'], 2)
      redis.call('HSET', k_model_versions(m['name']), version, record)
      redis.call('XADD', k_registry_events(), 'MAXLEN', '~', MAXLEN, '*',
        'event', 'VersionRegistered', 'model', m['name'], 'version', version,
        'status', m['status'])
      redis.call('HSET', jk, 'model:' .. m['name'], version)
      emit(id, 'info', 'ModelRegistered', 'registered model ' .. m['name'] .. ' version ' ..
        version .. ' (' .. m['status'] .. ')', attempt)
    else
      emit(id, 'warning', 'ModelNotRegistered', 'model ' .. m['name'] .. ' belongs to ' ..
        access .. ', not to key ' .. owner .. ': no version registered', attempt)
    end
  end
  emit(id, 'info', 'Succeeded', 'job succeeded', attempt)
  return {'SUCCEEDED', '', 0}
end

if state == 'CANCELLING' then
  move(id, state, 'CANCELLED', now)
  end_attempt(id, attempt, now, 'cancelled', '')
  emit(id, 'info', 'Cancelled', 'job cancelled', attempt)
  return {'CANCELLED', '', 0}
end

if outcome == 'deadline' then
  move(id, state, 'FAILED', now)
  end_attempt(id, attempt, now, 'failed', 'activeDeadlineSeconds passed')
  set_error(id, 'DeadlineExceeded', 'the job ran past its activeDeadlineSeconds')
  emit(id, 'warning', 'DeadlineExceeded', 'the job ran past its activeDeadlineSeconds', attempt)
  return {'FAILED', '', 0}
end

if outcome == 'preempted' then
  move(id, state, 'RETRYING', now)
  end_attempt(id, attempt, now, 'preempted', '')
  local queue = enqueue(id)
  emit(id, 'info', 'Preempted', 'worker shutting down: checkpointed and requeued', attempt)
  return {'RETRYING', queue, 0}
end

local code = payload['code']
if outcome == 'rejected' or outcome == 'deterministic' then
  code = code or 'InvalidInput'
  local why = 'on its input'
  if outcome == 'deterministic' then why = 'in a way another attempt would repeat' end
  move(id, state, 'FAILED', now)
  end_attempt(id, attempt, now, 'failed', message)
  set_error(id, code, message)
  emit(id, 'error', code, 'job failed ' .. why .. ', not retried: ' .. message, attempt)
  return {'FAILED', '', 0}
end

-- failed: a lost resource, a crash, a stalled runner. Retried after a backoff.
retries = tonumber(retries)
if retries < tonumber(max_retries) then
  local delay = backoff(retries, tonumber(ARGV[8]), tonumber(ARGV[9]))
  move(id, state, 'RETRYING', now)
  end_attempt(id, attempt, now, 'failed', message)
  redis.call('HSET', jk, 'retries', retries + 1)
  set_error(id, code or 'AttemptFailed', message)
  local queue = requeue(id, now, delay)
  emit(id, 'warning', 'Retrying', 'attempt ' .. attempt .. ' failed: ' .. message ..
    '; retry ' .. (retries + 1) .. ' of ' .. max_retries .. ' in ' ..
    string.format('%.1f', delay / 1000) .. ' s', attempt)
  return {'RETRYING', queue, delay}
end
move(id, state, 'FAILED', now)
end_attempt(id, attempt, now, 'failed', message)
set_error(id, code or 'JobFailed', message)
emit(id, 'error', 'Failed', 'job failed: ' .. message, attempt)
return {'FAILED', '', 0}
"""

# ARGV: prefix, maxlen, id, who. Returns the state after the request.
CANCEL = """
local id = ARGV[3]
local jk = k_job(id)
local state = redis.call('HGET', jk, 'state')
if not state then return false end
local now = now_ms()
if state == 'QUEUED' or state == 'RETRYING' then
  move(id, state, 'CANCELLED', now)
  emit(id, 'info', 'Cancelled', 'job cancelled by ' .. ARGV[4] .. ' before it ran again', 0)
  return 'CANCELLED'
end
if state == 'RUNNING' then
  move(id, state, 'CANCELLING', now)
  redis.call('HSET', jk, 'cancelRequested', 1)
  emit(id, 'info', 'CancelRequested', 'cancel requested by ' .. ARGV[4] ..
    '; stopping the running attempt', redis.call('HGET', jk, 'attempt'))
end
return redis.call('HGET', jk, 'state')
"""

# ARGV: prefix, maxlen, batch size, worker ttl ms, lease ms, outage gap ms, retry backoff base
# ms, backoff cap ms, poison job limit (0: none), queue names...
# Requeues (after a backoff) jobs whose lease lapsed, releases failed jobs whose backoff is
# over, forgets dead workers and expired jobs; after an outage, restarts every lease instead.
# Returns the queues that got jobs (one entry per job) to wake workers for.
REAP = """
local batch = tonumber(ARGV[3])
local worker_ttl = tonumber(ARGV[4])
local lease_ms = tonumber(ARGV[5])
local outage_ms = tonumber(ARGV[6])
local base_ms, cap_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local poison_limit = tonumber(ARGV[9])
local now = now_ms()
local woken = {}
local last_pass = tonumber(redis.call('GET', k_reaper_pass()))
redis.call('SET', k_reaper_pass(), now)
if last_pass and now - last_pass > outage_ms then
  -- No reaper reached Redis for longer than ever happens while it and the workers are up: an
  -- outage (Redis stopped, stalled, restarted, or out of every worker's reach). No worker could
  -- renew a lease through it either, so none counts as lost: every lease restarts now, and an
  -- attempt whose worker did die in the outage is reaped one lease later.
  local gap = string.format('%.1f', (now - last_pass) / 1000)
  local leases = redis.call('ZRANGEBYSCORE', k_leases(), '-inf', now + lease_ms, 'WITHSCORES')
  for i = 1, #leases, 2 do
    local id = leases[i]
    redis.call('ZADD', k_leases(), now + lease_ms, id)
    if tonumber(leases[i + 1]) <= now then
      emit(id, 'warning', 'StoreOutage', 'no worker reached the job store for ' .. gap ..
        ' s; the lease restarts, and the attempt goes on', redis.call('HGET', k_job(id), 'attempt'))
    end
  end
  return woken
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k_leases(), '-inf', now, 'LIMIT', 0, batch)) do
  local jk = k_job(id)
  local state, attempt, retries, max_retries, worker, queue = unpack(redis.call(
    'HMGET', jk, 'state', 'attempt', 'retries', 'maxRetries', 'worker', 'queue'))
  redis.call('ZREM', k_leases(), id)
  local lost = 'worker ' .. tostring(worker) .. ' stopped renewing the lease of attempt ' ..
    tostring(attempt)
  if queue == 'cluster' and (state == 'RUNNING' or state == 'CANCELLING') then
    -- The lost attempt's Kubernetes Job may still hold its nodes: a Kubernetes worker deletes it.
    redis.call('ZADD', k_cluster_cleanup(), tonumber(attempt), id)
  end
  if state == 'CANCELLING' then
    move(id, state, 'CANCELLED', now)
    end_attempt(id, attempt, now, 'lost', lost)
    emit(id, 'info', 'Cancelled', 'job cancelled (' .. lost .. ')', attempt)
  elseif state == 'RUNNING' then
    end_attempt(id, attempt, now, 'lost', lost)
    local lost_attempts = redis.call('HINCRBY', jk, 'lostAttempts', 1)
    if deadline_passed(id, now) then
      move(id, state, 'FAILED', now)
      set_error(id, 'DeadlineExceeded', 'the job ran past its activeDeadlineSeconds')
      emit(id, 'warning', 'DeadlineExceeded', lost .. '; activeDeadlineSeconds passed', attempt)
    elseif poison_limit > 0 and lost_attempts >= poison_limit then
      local why = lost_attempts .. ' attempts lost their worker (the poison-job limit): the ' ..
        'job itself may be what kills them (memory, a crash of the process); not retried'
      move(id, state, 'FAILED', now)
      set_error(id, 'PoisonJob', why)
      emit(id, 'error', 'PoisonJob', lost .. '; ' .. why, attempt)
    elseif tonumber(retries) < tonumber(max_retries) then
      local delay = backoff(tonumber(retries), base_ms, cap_ms)
      move(id, state, 'RETRYING', now)
      redis.call('HSET', jk, 'retries', tonumber(retries) + 1)
      local queue_now = requeue(id, now, delay)
      if queue_now ~= '' then table.insert(woken, queue_now) end
      emit(id, 'warning', 'WorkerLost', lost .. '; requeued to resume from its last checkpoint' ..
        ' in ' .. string.format('%.1f', delay / 1000) .. ' s', attempt)
    else
      move(id, state, 'FAILED', now)
      set_error(id, 'WorkerLost', lost .. ' and no retries are left')
      emit(id, 'error', 'Failed', lost .. ' and no retries are left', attempt)
    end
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k_delayed(), '-inf', now, 'LIMIT', 0, batch)) do
  redis.call('ZREM', k_delayed(), id)
  if redis.call('HGET', k_job(id), 'state') == 'RETRYING' then
    table.insert(woken, enqueue(id))
  end
end
local dead = redis.call('ZRANGEBYSCORE', k_workers(), '-inf', now - worker_ttl)
for _, worker in ipairs(dead) do
  redis.call('ZREM', k_workers(), worker)
  redis.call('DEL', k_worker(worker))
end
for i = 10, #ARGV do
  redis.call('ZREMRANGEBYSCORE', k_workers_queue(ARGV[i]), '-inf', now - worker_ttl)
end
forget_expired(now, batch)
return woken
"""

# ARGV: prefix, maxlen, job id, attempt. Forgets a job's Kubernetes clean-up once its Jobs up to
# `attempt` are deleted, unless a later attempt was lost meanwhile. Returns 1 when forgotten.
CLUSTER_CLEANED = """
if redis.call('ZSCORE', k_cluster_cleanup(), ARGV[3]) == ARGV[4] then
  return redis.call('ZREM', k_cluster_cleanup(), ARGV[3])
end
return 0
"""

# ARGV: prefix, maxlen, batch size. Drops expired jobs from the indexes; returns how many.
FORGET_EXPIRED = """
return forget_expired(now_ms(), tonumber(ARGV[3]))
"""

# ARGV: prefix, maxlen, worker id, ttl ms, info JSON, queue names...
# Records a worker's heartbeat; the reaper forgets it once `ttl` passes without one.
HEARTBEAT = """
local worker = ARGV[3]
local ttl = tonumber(ARGV[4])
local now = now_ms()
redis.call('ZADD', k_workers(), now, worker)
for i = 6, #ARGV do redis.call('ZADD', k_workers_queue(ARGV[i]), now, worker) end
local wk = k_worker(worker)
for name, value in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', wk, name, value) end
redis.call('HSET', wk, 'lastSeen', now)
redis.call('PEXPIRE', wk, ttl)
return now
"""

# ARGV: prefix, maxlen, worker id, queue names... A worker that stops cleanly leaves at once.
DEPART = """
redis.call('ZREM', k_workers(), ARGV[3])
redis.call('DEL', k_worker(ARGV[3]))
for i = 4, #ARGV do redis.call('ZREM', k_workers_queue(ARGV[i]), ARGV[3]) end
return 1
"""

# ARGV: prefix, maxlen, model name, alias, version ('' to remove). Returns the version's
# status, or false when the model or version is unknown.
SET_ALIAS = """
local name, alias, version = ARGV[3], ARGV[4], ARGV[5]
local aliases = k_model_aliases(name)
if version == '' then
  local removed = redis.call('HDEL', aliases, alias)
  if removed == 1 then
    redis.call('XADD', k_registry_events(), 'MAXLEN', '~', MAXLEN, '*',
      'event', 'AliasRemoved', 'model', name, 'alias', alias)
  end
  return removed
end
local raw = redis.call('HGET', k_model_versions(name), version)
if not raw then return false end
local status = cjson.decode(raw)['status']
if status ~= 'READY' then return status end
redis.call('HSET', aliases, alias, version)
redis.call('HSET', k_model(name), 'updatedAt', now_ms())
redis.call('XADD', k_registry_events(), 'MAXLEN', '~', MAXLEN, '*',
  'event', 'AliasSet', 'model', name, 'alias', alias, 'version', version)
return status
"""

# ARGV: prefix, maxlen, id, a revision the caller has. Returns that revision when the job is
# still at it, else the job's hash as a flat list (empty for an unknown job): pollers of an
# unchanged job get a few bytes back, not the whole record.
READ_IF_CHANGED = """
local jk = k_job(ARGV[3])
if redis.call('HGET', jk, 'revision') == ARGV[4] then return ARGV[4] end
return redis.call('HGETALL', jk)
"""

SCRIPTS: dict[str, str] = {
    "create": CREATE,
    "claim": CLAIM,
    "renew": RENEW,
    "write": WRITE,
    "finish": FINISH,
    "cancel": CANCEL,
    "reap": REAP,
    "heartbeat": HEARTBEAT,
    "depart": DEPART,
    "set_alias": SET_ALIAS,
    "read_if_changed": READ_IF_CHANGED,
    "forget_expired": FORGET_EXPIRED,
    "cluster_cleaned": CLUSTER_CLEANED,
}


# Scripts that only read: the key builders are all they need. Redis runs a script's whole
# source on every call, and the prelude's tables and functions would cost a poll of
# GET /v1/jobs/{id} more of Redis's time than the read itself.
READERS = frozenset({"read_if_changed"})


def script_source(name: str, retention_ms: int = 0) -> str:
    """The full source of one script: the retention (0: keep forever), the prelude (the key
    builders alone for a script that only reads), its body."""
    if name in READERS:
        return f"local P = ARGV[1]\n{lua_key_functions()}\n" + SCRIPTS[name]
    return f"local RETENTION_MS = {int(retention_ms)}\n" + PRELUDE + SCRIPTS[name]


class LuaScripts:
    """The scripts above, loaded into one Redis client and called by name."""

    def __init__(
        self, redis: Redis, prefix: str, stream_max_entries: int, retention_ms: int = 0
    ) -> None:
        self._common = [prefix, str(stream_max_entries)]
        self._scripts = {
            name: redis.register_script(script_source(name, retention_ms)) for name in SCRIPTS
        }

    async def __call__(self, name: str, *args: str | int | float) -> Any:
        return await self._scripts[name](keys=[], args=[*self._common, *args])
