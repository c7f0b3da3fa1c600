# ruff: noqa: F811  (the fixtures of test_collector are imported and then taken as arguments)
# The boot epoch (protocol version 2, docs/protocol.md section 2): (epoch, counter) pairs that
# increase lexicographically are taken, a new epoch is a restart logged at INFO with no 409, a
# replay within an epoch is refused, a jump beyond the bounds gets a signed 409 the device
# adopts, and version 1 requests keep working. SQLite and the real PostgreSQL.
import logging

import pytest
import uplink_proto as up

from tests.host.test_collector import (  # noqa: F401  (fixtures)
    SECRET_A,
    client,
    db_url,
    pg_server,
    recs,
    store,
    upload,
)
from tools.collector.bench import SimDevice
from tools.collector.db import MAX_COUNTER_JUMP, MAX_EPOCH_JUMP, key_floor


def post(client, body):
    return client.post("/v1/upload", content=body)


def test_a_new_epoch_is_a_restart_taken_at_once(client, store, caplog):
    caplog.set_level(logging.INFO)
    dev = SimDevice(1, SECRET_A, epoch=10)
    upload(client, dev, 1, 3)
    upload(client, dev, 4, 5)
    assert store.device(1)["counter"] == 10 << 32 | 2
    rebooted = SimDevice(1, SECRET_A, epoch=16)  # its BOOT record moved the log on
    rebooted.acked = 5
    assert upload(client, rebooted, 6, 8)["value"] == 8  # no 409: the first request is taken
    assert store.device(1)["counter"] == 16 << 32 | 1
    assert store.count(1) == 8
    restart = [r for r in caplog.records if "boot epoch 16 (was 10)" in r.getMessage()]
    assert restart and restart[0].levelno == logging.INFO
    assert not [m for m in caplog.messages if "replay" in m or "stale" in m or "jumps" in m]


def test_a_replay_within_an_epoch_is_refused_and_logged(client, store, caplog):
    dev = SimDevice(1, SECRET_A, epoch=10)
    body = dev.upload_body(1, recs(1, 3))
    assert post(client, body).status_code == 200
    upload(client, dev, 4, 5)
    before = store.device(1)
    r = post(client, body)
    assert r.status_code == 409
    assert store.device(1) == before and store.count(1) == 5
    msgs = [r for r in caplog.records if "a replayed request" in r.getMessage()]
    assert msgs and msgs[0].levelno == logging.WARNING
    # the answer is signed, bound to the replayed request and carries the server's pair
    ans = up.decode_answer(SECRET_A, r.content, 1, 1, up.T_UPLOAD, up.request_mac(body), 10)
    assert (ans["status"], ans["server_epoch"], ans["server_counter"]) == (1, 10, 2)


def test_an_older_epoch_is_refused_and_the_device_adopts_the_servers(client, store, caplog):
    dev = SimDevice(1, SECRET_A, epoch=50)
    upload(client, dev, 1, 2)
    lost_log = SimDevice(1, SECRET_A, epoch=3)  # a new flash: its log starts again
    lost_log.acked = 2
    r = post(client, lost_log.upload_body(3, recs(3, 4)))
    assert r.status_code == 409
    ans = lost_log.answer(r.content)
    assert (lost_log.epoch, lost_log.counter) == (50, 1)
    assert ans["server_epoch"] == 50
    assert upload(client, lost_log, 3, 4)["value"] == 4
    assert store.device(1)["counter"] == 50 << 32 | 2
    assert any("a replayed request" in m for m in caplog.messages)


@pytest.mark.parametrize(
    "epoch, counter",
    [
        (10 + MAX_EPOCH_JUMP + 1, 1),  # an epoch too far ahead
        (10, 5 + MAX_COUNTER_JUMP + 1),  # a counter too far ahead in the same epoch
        (11, MAX_COUNTER_JUMP + 1),  # a new epoch that does not start near 0
        (0xFFFFFFFF, 0xFFFFFFFF),  # the end of both ranges: beyond a signed 64-bit key
        (up.EPOCH_MAX + 1, 1),
    ],
)
def test_no_value_a_device_sends_locks_it_out(client, store, caplog, epoch, counter):
    dev = SimDevice(1, SECRET_A, epoch=10)
    for first in (1, 3, 5, 7, 9):
        upload(client, dev, first, first + 1)
    assert dev.counter == 5
    dev.epoch = epoch
    r = post(client, dev.upload_body(11, recs(11, 12), counter=counter))
    assert r.status_code == 409
    dev.answer(r.content)
    assert (dev.epoch, dev.counter) == (10, 5)  # adopted the real pair
    assert any("jumps more than" in m for m in caplog.messages)
    assert store.count(1) == 10 and store.device(1)["counter"] == 10 << 32 | 5
    assert upload(client, dev, 11, 12)["value"] == 12
    # and the next boot's epoch is taken as usual
    dev.epoch, dev.counter = 20, 0
    assert upload(client, dev, 13, 14)["value"] == 14


def test_version_1_requests_keep_working_and_cannot_replay_over_version_2(client, store, caplog):
    caplog.set_level(logging.INFO)
    old = SimDevice(1, SECRET_A)  # a validator with older firmware: no epoch
    upload(client, old, 1, 2)
    upload(client, old, 3, 4)
    captured = old.upload_body(5, recs(5, 6))
    assert post(client, captured).status_code == 200
    rebooted = SimDevice(1, SECRET_A)
    rebooted.acked = 6
    r = post(client, rebooted.upload_body(7, recs(7, 8), now=2**31))  # clock ahead: a restart
    assert r.status_code == 409
    ans = rebooted.answer(r.content)
    assert ans["server_counter"] == 3 and "server_epoch" in ans
    assert any("the validator restarted" in m for m in caplog.messages)
    assert upload(client, rebooted, 7, 8)["value"] == 8
    # the firmware is updated: version 2 from epoch 9 on
    new = SimDevice(1, SECRET_A, epoch=9)
    new.acked = 8
    assert upload(client, new, 9, 10)["value"] == 10
    # a version 1 request captured before the update is refused: epoch 0 is below 9
    r = post(client, captured)
    assert r.status_code == 409
    assert store.count(1) == 10 and store.device(1)["counter"] == 9 << 32 | 1


def test_parameter_queries_carry_the_epoch_too(client, store):
    dev = SimDevice(1, SECRET_A, epoch=7)
    r = client.post("/v1/params", content=dev.params_body(0))
    assert r.status_code == 200
    ans = dev.answer(r.content, up.T_PARAMS)
    assert ans["status"] == up.ST_OK and ans["server_epoch"] == 7
    again = SimDevice(1, SECRET_A, epoch=7)  # same epoch, counter from 0: stale
    r = client.post("/v1/params", content=again.params_body(0))
    assert r.status_code == 409
    again.answer(r.content, up.T_PARAMS)
    assert (again.epoch, again.counter) == (7, 1)
    assert client.post("/v1/params", content=again.params_body(0)).status_code == 200


def test_key_floor():
    assert key_floor(5) == 5 - MAX_COUNTER_JUMP  # version 1: as before
    assert key_floor(7 << 32 | 3) == 0  # a new epoch near the start: any older epoch within
    assert key_floor((MAX_EPOCH_JUMP + 9) << 32 | 1) == 9 << 32
    assert key_floor(7 << 32 | (MAX_COUNTER_JUMP + 5)) == 7 << 32 | 5
