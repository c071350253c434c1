from jobs import Job, JobState, Queue, Worker
from tests import jobfuncs


def test_enqueue_run_result(broker):
    j = jobfuncs.add.enqueue(2, 3)
    assert j.refresh().state is JobState.QUEUED
    w = Worker(["default"], broker=broker)
    done = w.run_until_empty()
    assert done == {"completed": 1}
    assert Job.fetch(j.id).state is JobState.COMPLETED
    assert j.result(timeout=1) == 5
    assert Queue("default").counts()["completed"] == 1
