# mpy: heapsize=256k timeout=120 server=tools.collector.testserver_pg
# The uplink's end-to-end cases again, with the collector on a real PostgreSQL server.
import test_uplink as t

setup = t.setup
teardown = t.teardown


async def test_batches_reach_the_collector_once_and_free_only_what_it_holds():
    await t.test_batches_reach_the_collector_once_and_free_only_what_it_holds()


async def test_connection_cut_after_the_request_before_the_answer():
    await t.test_connection_cut_after_the_request_before_the_answer()


async def test_server_5xx_restart_and_garbled_answers():
    await t.test_server_5xx_restart_and_garbled_answers()


async def test_back_office_restored_from_an_older_backup():
    await t.test_back_office_restored_from_an_older_backup()


async def test_every_record_once_through_random_faults():
    await t.test_every_record_once_through_random_faults()
