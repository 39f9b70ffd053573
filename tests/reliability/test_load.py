"""Load: a 50-trial hyper-parameter sweep submitted concurrently against the test control plane,
every Job tracked to completion through kwok, none lost or duplicated (counted by label on the
API server), all cleaned up. The time is printed by bench/sweep.py, not asserted here."""
from __future__ import annotations

import time

import pytest

from fairing.kube.wait import WaitTimeout

from .sweep import census, run_sweep

TRIALS = 50


def test_fifty_concurrent_training_jobs_all_complete_none_lost_or_duplicated(tmp_path, registry, base_image, kube,
                                                                             rel_cache):
    admin = kube.kube()
    sweep = run_sweep(TRIALS, registry=f"{registry.host}/reliability", base_image=base_image.docker,
                      namespace=kube.namespace, kubeconfig=str(kube.sa_kubeconfig), workdir=tmp_path,
                      cache_dir=rel_cache, cleanup=False)
    try:
        assert sweep.errors == {}
        assert sorted(sweep.handles) == list(range(TRIALS))
        assert {i: s for i, s in sweep.statuses.items() if s != "Succeeded"} == {}
        c = census(admin, kube.namespace, sweep.sweep_id)
        assert c["jobs"] == TRIALS  # none lost
        assert set(c["names"].values()) == {1} and set(c["trials"].values()) == {1}  # none duplicated
        assert set(c["trials"]) == {str(i) for i in range(TRIALS)}
        assert c["states"] == {"Succeeded": TRIALS}
        assert c["pod_phases"] == {"Succeeded": TRIALS}  # one pod each: no retries, no extra pods
        # Each trial ran its own command line (the sweep's parameter), pinned by digest.
        cmds = {tuple(h.manifests()[0]["spec"]["template"]["spec"]["containers"][0]["command"][-2:])
                for h in sweep.handles.values()}
        assert len(cmds) == TRIALS
        print(f"\n[figure] sweep of {TRIALS}: submit {sweep.seconds['submit']:.1f}s, "
              f"wait {sweep.seconds['wait']:.1f}s")
    finally:
        # Not handle.delete()'s own wait: it can miss a fast deletion (a race, see
        # test_delete_notices_a_deletion_that_finishes_before_its_watch_lists); poll the census instead.
        for h in sweep.handles.values():
            h.delete(wait=False)
    deadline = time.monotonic() + 120
    while (c := census(admin, kube.namespace, sweep.sweep_id))["jobs"] or c["pods"]:
        assert time.monotonic() < deadline, f"left behind after 120s: {c}"
        time.sleep(0.5)


@pytest.mark.xfail(strict=True, raises=WaitTimeout, reason="fairing/deployers/base.py KubeHandle._wait_gone(): the existence check "
                   "(kube.get) runs before the Mux watch thread's initial list; a deletion finishing in between "
                   "leaves an empty list and no DELETED event, so delete() raises WaitTimeout although the Job "
                   "is gone. Fix: watch from the resourceVersion returned by the get(), or treat an initial "
                   "list without the object as gone.")
def test_delete_notices_a_deletion_that_finishes_before_its_watch_lists(kube):
    """handle.delete() waits for the object to go. It starts a watch (whose first list runs on a
    thread), checks the object still exists, then waits for DELETED. If the deletion finishes after
    that check but before the watch's first list, the list is empty, no DELETED ever comes, and
    delete() times out although the Job is gone. Seen for real in the 50-job sweep (1 run in 3);
    here the window is widened on purpose: the watch's first list is answered 3 s late, as a busy
    API server may answer it."""
    import uuid

    from fairing.deployers.job import JobDeployer
    from tests.rig.kube import fake_image

    from .test_faults import _recording_kube

    k = _recording_kube(kube.kubeconfig, kube.namespace)
    name = f"rel-delrace-{uuid.uuid4().hex[:8]}"
    handle = JobDeployer(kube.namespace, kube=k, name=name).deploy(fake_image(name))
    assert handle.wait(timeout=60) == "Succeeded"
    k.first_list_delay = 3.0
    try:
        handle.delete(timeout=15)  # returns once the Job is gone
    except WaitTimeout:
        # The Job is gone: the timeout is the wait's mistake, not a stuck deletion.
        assert kube.kube().get("batch/v1", "Job", name, kube.namespace) is None
        raise
    assert kube.kube().get("batch/v1", "Job", name, kube.namespace) is None
