"""The cronjob deployer on the real API server: stored schedule and options, image pinned by digest,
suspend/resume, a triggered run and a run started by the CronJob controller itself, each watched to
completion; deletion takes the runs and their pods with it."""
import pytest

from fairing.deployers import pod
from fairing.deployers.k8s.cronjob import CronJobDeployer
from tests.rig.kube import fake_image


def test_cronjob_stored_suspend_resume_trigger_delete(kube, admin, cleanup):
    image = fake_image("cron")
    d = CronJobDeployer(kubeconfig=kube.sa_kubeconfig, schedule="0 3 * * MON-FRI", time_zone="Europe/Berlin",
                        concurrency_policy="Forbid", successful_jobs_history_limit=2, failed_jobs_history_limit=1,
                        backoff_limit=1, mutators=[pod.cpu("100m")])
    h = d.deploy(image)
    cleanup(h)
    assert h.status() == "Scheduled"
    cj = admin.get("batch/v1", "CronJob", h.name)
    spec = cj["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"], spec["suspend"]) == ("0 3 * * MON-FRI", "Europe/Berlin", "Forbid", 2, 1, False)
    job_spec = spec["jobTemplate"]["spec"]
    (main,) = job_spec["template"]["spec"]["containers"]
    assert main["image"] == image.ref and main["resources"]["requests"] == {"cpu": "100m"}
    assert job_spec["backoffLimit"] == 1
    assert cj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fairing"

    h.suspend()
    assert h.status() == "Suspended" and admin.get("batch/v1", "CronJob", h.name)["spec"]["suspend"] is True
    h.resume()
    assert h.status() == "Scheduled"

    run = h.trigger()
    assert h.wait(timeout=120) == "Succeeded"
    assert run.status() == "Succeeded"
    (job,) = h.jobs()
    assert job["metadata"]["name"] == run.name
    assert job["metadata"]["ownerReferences"][0]["uid"] == cj["metadata"]["uid"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image.ref
    assert len(run.pods()) == 1

    h.delete()
    assert admin.get("batch/v1", "CronJob", h.name) is None
    assert admin.get("batch/v1", "Job", run.name) is None
    assert admin.list("v1", "Pod", kube.namespace, label_selector=f"job-name={run.name}")["items"] == []


def test_cronjob_controller_starts_a_run_on_schedule(kube, cleanup):
    """Every minute: the CronJob controller itself creates the Job; wait() follows it to the end.
    (Up to a minute of waiting for the schedule: the real controller is on the wall clock.)"""
    h = CronJobDeployer(kubeconfig=kube.sa_kubeconfig, schedule="* * * * *").deploy(fake_image("cron-minute"))
    cleanup(h)
    assert h.wait(timeout=150) == "Succeeded"
    runs = h.jobs()
    assert runs and "cronjob.kubernetes.io/instantiate" not in (runs[0]["metadata"].get("annotations") or {})
    assert h.last_run().status() == "Succeeded"


def test_suspended_cronjob_starts_nothing(kube, cleanup):
    from fairing.kube.wait import WaitTimeout

    h = CronJobDeployer(kubeconfig=kube.sa_kubeconfig, schedule="@every 1s", suspend=True).deploy(fake_image("cron-susp"))
    cleanup(h)
    with pytest.raises(WaitTimeout, match="started no run within 4s .*Suspended") as e:
        h.wait(timeout=4)
    assert "resume()" in e.value.hint
    assert h.jobs() == []
