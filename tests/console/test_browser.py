"""The console in a real browser: headless Chromium (Debian's, driven by Playwright) against
a server with controllers and a simulated fleet, while kubectl changes the same objects.

Screenshots of the main pages are written to docs/console/ with EVROC_SCREENSHOTS=1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kubectl, Server, make_kubectl
from tests.console.browser import WAIT, chromium, new_page, shoot
from tests.console.conftest import issue_token
from tests.e2e.conftest import start_cloud

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+p/T/LDpSI7p4bOJfS7M1/t57vh7UQm7fAZSQE2zLB "
       "user@example")
FLEET = {
    "timing": {"provision": 0.5, "pull": 0.5, "boot": 1, "stop": 0.5, "migrate": 1},
    "heartbeat": {"interval": 1, "timeout": 5},
    "hosts": [{"name": "a-general", "zone": "se-sto-a", "vcpu": 32, "memoryGB": 128, "count": 2},
              {"name": "b-general", "zone": "se-sto-b", "vcpu": 32, "memoryGB": 128}],
}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_cloud(tmp_path_factory.mktemp("console"), FLEET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(cloud: Server) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def admin_token(cloud: Server) -> str:
    return issue_token(cloud, "console-admin", "system:masters")


@pytest.fixture
def kubectl(cloud: Server, tmp_path: Path) -> Kubectl:
    return make_kubectl(cloud, tmp_path)


def signed_in(browser: Any, server: Server, token: str) -> Any:
    """A page of a fresh browser context, signed in with `token` through the login form."""
    page = new_page(browser)
    page.goto(f"{server.url}/console/")
    page.wait_for_url(re.compile(r"/console/login$"))  # no session: the login page
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/#/"))
    return page


def expect(locator: Any) -> Any:
    return playwright_api.expect(locator)


def create_vm(page: Any, project: str, name: str, key: str = KEY,
              placement_group: str = "") -> None:
    page.goto(page.url.split("#")[0] + f"#/{project}/vms/+new")
    page.fill("input[name=name]", name)
    page.select_option("select[name=profile]", "a1a.s")
    page.fill("textarea[name=sshKeys]", key)
    if placement_group:
        page.select_option("select[name=placementGroup]", placement_group)
    page.click("form.form button[type=submit]")


def vm_manifest(name: str, zone: str = "") -> str:
    """A VM and its boot disk, for kubectl apply."""
    placement = f"\n  placement: {{zone: {zone}}}" if zone else ""
    return f"""
apiVersion: compute.evroclabs.net/v1alpha1
kind: Disk
metadata: {{name: {name}-boot}}
spec: {{diskImage: {{diskImageRef: {{name: ubuntu.24-04.1}}}}}}
---
apiVersion: compute.evroclabs.net/v1alpha1
kind: VirtualMachine
metadata: {{name: {name}}}
spec:
  running: true
  vmVirtualResourcesRef: {{vmVirtualResourcesRefName: a1a.s}}
  diskRefs: [{{name: {name}-boot, bootFrom: true}}]{placement}
"""


def eventually(check: Any, timeout: float = WAIT / 1000) -> Any:
    """`check()`'s first truthy answer, asked every 0.2 s (kubectl's view of what the page did)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer or time.monotonic() > deadline:
            assert answer, f"{check} did not come true in {timeout} s"
            return answer
        time.sleep(0.2)


def test_log_in_create_a_vm_and_watch_it_live(browser: Any, cloud: Server, admin_token: str,
                                              kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "web")
    page = signed_in(browser, cloud, admin_token)
    expect(page.locator("#user")).to_have_text("console-admin")
    page.goto(page.url.split("#")[0] + "#/web/vms/+new")
    expect(page.locator("select[name=profile] option[value='gn-l40s.s']")).to_contain_text(
        re.compile(r"15 vCPU, 198 GB, 1× GPU .*L40S"))
    create_vm(page, "web", "web-1")
    page.wait_for_url(re.compile(r"#/web/vms/web-1$"))
    status = page.locator(".page-head .status")
    expect(status).to_have_text("Running", timeout=WAIT)
    expect(page.locator("[data-testid=serial-console]")).to_contain_text("web-1 login:", timeout=WAIT)
    expect(page.locator("section", has_text="Events")).to_contain_text("Started", timeout=WAIT)
    shoot(page, "vm-detail")
    # kubectl changes the VM; the page follows without a reload.
    marker = page.evaluate("window.__marker = Math.random()")
    kubectl("-n", "web", "patch", "vm", "web-1", "--type", "merge", "-p", '{"spec":{"running":false}}')
    expect(status).to_have_text("Stopped", timeout=WAIT)
    expect(page.locator("[data-testid=serial-console]")).to_contain_text("reboot: Power down")
    kubectl("-n", "web", "patch", "vm", "web-1", "--type", "merge", "-p", '{"spec":{"running":true}}')
    expect(status).to_have_text("Running", timeout=WAIT)
    assert page.evaluate("window.__marker") == marker  # the same document all along
    page.click("a:has-text('Virtual machines')")
    row = page.locator("tr[data-vm=web-1]")
    expect(row.locator(".status")).to_have_text("Running")
    expect(row).to_contain_text("a1a.s")
    expect(row).to_contain_text(re.compile(r"10\.0\.\d+\.\d+"))
    shoot(page, "vm-list")


def test_an_invalid_ssh_key_is_shown_beside_its_field(browser: Any, cloud: Server,
                                                      admin_token: str) -> None:
    page = signed_in(browser, cloud, admin_token)
    create_vm(page, "default", "bad-key", "ssh-ed25519 AAAAnotakey user@host")
    error = page.locator("[data-field='spec.osSettings.ssh'] .field-error")
    expect(error).to_contain_text('Invalid value: "ssh-ed25519 AAAAnotakey user@host"')
    shoot(page, "vm-create-error")
    assert page.url.endswith("#/default/vms/+new")  # nothing created
    page.goto(page.url.split("#")[0] + "#/default/disks")
    expect(page.locator("h1")).to_have_text("Disks")
    expect(page.locator("tr[data-name=bad-key-boot]")).to_have_count(0)


def test_stop_start_and_delete_from_the_table(browser: Any, cloud: Server, admin_token: str,
                                              kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "ops")
    page = signed_in(browser, cloud, admin_token)
    create_vm(page, "ops", "ops-1")
    page.wait_for_url(re.compile(r"#/ops/vms/ops-1$"))
    page.goto(page.url.split("#")[0] + "#/ops/vms")
    row = page.locator("tr[data-vm=ops-1]")
    expect(row.locator(".status")).to_have_text("Running", timeout=WAIT)
    row.locator("[data-action=stop]").click()
    expect(row.locator(".status")).to_have_text("Stopped", timeout=WAIT)
    assert kubectl("-n", "ops", "get", "vm", "ops-1", "-o", "jsonpath={.spec.running}") == "false"
    row.locator("[data-action=start]").click()
    expect(row.locator(".status")).to_have_text("Running", timeout=WAIT)
    row.locator("[data-action=delete]").click()
    page.locator("dialog.confirm button.danger").click()
    expect(row).to_have_count(0, timeout=WAIT)
    assert "NotFound" in kubectl.run("-n", "ops", "get", "vm", "ops-1", check=False).stderr


def test_a_viewer_is_offered_no_writes(browser: Any, cloud: Server, kubectl: Kubectl) -> None:
    kubectl("create", "rolebinding", "viewer-views", "--clusterrole=view", "--user=viewer",
            "-n", "default")
    page = signed_in(browser, cloud, issue_token(cloud, "viewer"))
    base = page.url.split("#")[0]
    page.goto(base + "#/default/publicips")
    expect(page.locator("h1, h2").first).to_be_visible(timeout=WAIT)
    assert not "".join(page.locator(".error").all_inner_texts()).strip()  # reading is allowed
    expect(page.locator("form.inline-form")).to_have_count(0)
    kubectl("apply", "-f", "-", input=VIEWED)
    page.goto(base + "#/default/vms")
    expect(page.locator("tr", has_text="viewed")).to_be_visible(timeout=WAIT)
    expect(page.locator("[data-action=delete], [data-action=stop], a[href*=new]")).to_have_count(0)


VIEWED = """
apiVersion: compute.evroclabs.net/v1alpha1
kind: Disk
metadata: {name: viewed-boot}
spec: {diskImage: {diskImageRef: {name: ubuntu.24-04.1}}}
---
apiVersion: compute.evroclabs.net/v1alpha1
kind: VirtualMachine
metadata: {name: viewed}
spec:
  vmVirtualResourcesRef: {vmVirtualResourcesRefName: a1a.s}
  diskRefs: [{name: viewed-boot, bootFrom: true}]
"""


def test_a_refused_write_shows_the_status(browser: Any, cloud: Server, kubectl: Kubectl) -> None:
    """The form is offered while the role allows it; the role is withdrawn before the write."""
    kubectl("create", "rolebinding", "editor-edits", "--clusterrole=edit", "--user=editor",
            "-n", "default")
    page = signed_in(browser, cloud, issue_token(cloud, "editor"))
    page.goto(page.url.split("#")[0] + "#/default/publicips")
    page.fill("form.inline-form input[name=name]", "mine")
    kubectl("delete", "rolebinding", "editor-edits", "-n", "default")
    page.click("form.inline-form button[type=submit]")
    expect(page.locator("#toast")).to_contain_text(
        'Forbidden: publicips.networking.evroclabs.net is forbidden: User "editor" cannot create')


def test_pages_of_what_vms_use(browser: Any, cloud: Server, admin_token: str,
                               kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "infra")
    page = signed_in(browser, cloud, admin_token)
    base = page.url.split("#")[0]
    page.goto(base + "#/infra/securitygroups")
    page.fill("form.inline-form input[name=name]", "ssh")
    page.click("form.inline-form button[type=submit]")
    page.locator("tr[data-name=ssh] [data-action=edit]").click()
    page.click("button:has-text('Add rule')")
    rule = page.locator(".rules tbody tr").last
    rule.locator("[name=rule-name]").fill("ssh-in")
    rule.locator("[name=port]").fill("22")
    rule.locator("[name=remote]").fill('{"cidr": "0.0.0.0/0"}')  # not a field of remote
    page.click("button:has-text('Save rules')")
    expect(page.locator(".rules .error")).to_contain_text("Invalid", timeout=WAIT)
    rule.locator("[name=remote]").fill('{"address": "0.0.0.0/0"}')
    page.click("button:has-text('Save rules')")
    expect(page.locator("tr[data-name=ssh]")).to_contain_text("1", timeout=WAIT)
    rules = kubectl("-n", "infra", "get", "sg", "ssh", "-o", "jsonpath={.spec.rules[0].port}")
    assert rules == "22"
    shoot(page, "security-groups")
    page.goto(base + "#/infra/disks")
    page.fill("form.inline-form input[name=name]", "scratch")
    page.fill("form.inline-form input[name=size]", "10")
    page.click("form.inline-form button[type=submit]")
    expect(page.locator("tr[data-name=scratch]")).to_contain_text("10 GB", timeout=WAIT)
    page.goto(base + "#/infra/fleet")
    host = page.locator("tr[data-host=a-general-1]")
    expect(host).to_contain_text("Ready", timeout=WAIT)
    host.locator("[data-action=cordon]").click()
    expect(host.locator("[data-action=uncordon]")).to_be_visible(timeout=WAIT)
    assert kubectl("get", "host", "a-general-1", "-o", "jsonpath={.spec.schedulable}") == "false"
    shoot(page, "fleet")
    host.locator("[data-action=uncordon]").click()
    expect(host.locator("[data-action=cordon]")).to_be_visible(timeout=WAIT)


def test_hot_swap_attach_and_detach_from_the_disks_page(browser: Any, cloud: Server,
                                                        admin_token: str, kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "hot")
    kubectl("-n", "hot", "apply", "-f", "-", input=vm_manifest("db"))
    kubectl("-n", "hot", "apply", "-f", "-", input=DATA_DISK)
    page = signed_in(browser, cloud, admin_token)
    base = page.url.split("#")[0]
    page.goto(base + "#/hot/disks")
    row = page.locator("tr[data-name=data]")
    expect(row.locator(".badge")).to_have_text("WaitingForFirstConsumer", timeout=WAIT)
    row.get_by_label("VM to attach data to").fill("db")
    row.locator("[data-action=attach]").click()
    expect(row).to_contain_text("db (hotswap)", timeout=WAIT)
    expect(row.locator("[data-action=detach]")).to_have_text("Detach from db")
    expect(page.locator("tr[data-name=db-boot]")).to_contain_text("db (permanent)")
    assert kubectl("-n", "hot", "get", "hotswapdiskattachments", "-o",
                   "jsonpath={.items[*].spec.vmRef}/{.items[*].spec.diskRef}") == "db/data"
    eventually(lambda: "data" in kubectl("-n", "hot", "get", "vm", "db", "-o",
                                         "jsonpath={.status.hotswapDiskAttachments[*].disk}"))
    shoot(page, "disks")
    page.goto(base + "#/hot/vms/db")
    attached = page.locator("section:has(h2:text-is('Disks')) tr", has_text="hot-swap")
    expect(attached).to_contain_text("data", timeout=WAIT)
    expect(attached.locator(".badge")).to_have_text("Attached", timeout=WAIT)
    expect(attached).to_contain_text('attached to VirtualMachine "db"')
    page.goto(base + "#/hot/disks")
    row.locator("[data-action=detach]").click()
    expect(row.locator("[data-action=attach]")).to_be_visible(timeout=WAIT)
    expect(row).not_to_contain_text("hotswap")
    eventually(lambda: not kubectl("-n", "hot", "get", "hotswapdiskattachments", "-o", "name"))


DATA_DISK = """
apiVersion: compute.evroclabs.net/v1alpha1
kind: Disk
metadata: {name: data}
spec: {diskSize: {amount: 10, unit: GB}}
"""


def test_allocate_and_delete_a_public_ip(browser: Any, cloud: Server, admin_token: str,
                                         kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "ips")
    page = signed_in(browser, cloud, admin_token)
    page.goto(page.url.split("#")[0] + "#/ips/publicips")
    page.fill("form.inline-form input[name=name]", "front")
    page.click("form.inline-form button[type=submit]")
    row = page.locator("tr[data-name=front]")
    address = row.locator("td").nth(1)
    expect(address).to_have_text(re.compile(r"^\d+\.\d+\.\d+\.\d+$"), timeout=WAIT)
    assert kubectl("-n", "ips", "get", "publicip", "front", "-o",
                   "jsonpath={.status.publicIPv4Address}") == address.inner_text()
    row.locator("[data-action=delete]").click()
    page.locator("dialog.confirm button.danger").click()
    expect(row).to_have_count(0, timeout=WAIT)
    assert "NotFound" in kubectl.run("-n", "ips", "get", "publicip", "front", check=False).stderr


def test_a_placement_group_and_a_vm_in_it(browser: Any, cloud: Server, admin_token: str,
                                          kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "pg")
    page = signed_in(browser, cloud, admin_token)
    base = page.url.split("#")[0]
    page.goto(base + "#/pg/placementgroups")
    page.fill("form.inline-form input[name=name]", "spread-1")
    page.click("form.inline-form button[type=submit]")
    group = page.locator("tr[data-name=spread-1]")
    expect(group).to_contain_text("spread", timeout=WAIT)
    create_vm(page, "pg", "member-1", placement_group="spread-1")
    page.wait_for_url(re.compile(r"#/pg/vms/member-1$"))
    expect(page.locator(".page-head .status")).to_have_text("Running", timeout=WAIT)
    expect(page.locator("section", has_text="Overview")).to_contain_text("spread-1")
    assert kubectl("-n", "pg", "get", "vm", "member-1", "-o",
                   "jsonpath={.spec.placementGroup}") == "spread-1"
    page.goto(base + "#/pg/placementgroups")
    expect(group).to_contain_text("member-1", timeout=WAIT)
    assert kubectl("-n", "pg", "get", "placementgroup", "spread-1", "-o",
                   "jsonpath={.status.virtualMachines[*].name}") == "member-1"


QUOTA = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: team}
spec:
  hard:
    compute.evroclabs.net/vcpu: "16"
    count/virtualmachines.compute.evroclabs.net: "4"
"""


def test_the_quotas_page_shows_used_against_hard(browser: Any, cloud: Server, admin_token: str,
                                                 kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "quota")
    kubectl("-n", "quota", "apply", "-f", "-", input=QUOTA)
    page = signed_in(browser, cloud, admin_token)
    page.goto(page.url.split("#")[0] + "#/quota/quotas")
    vcpu = page.locator("tr[data-resource='compute.evroclabs.net/vcpu']")
    vms = page.locator("tr[data-resource='count/virtualmachines.compute.evroclabs.net']")
    expect(vcpu.locator(".used")).to_have_text("0", timeout=WAIT)
    expect(vcpu.locator(".hard")).to_have_text("16")
    expect(vcpu).to_contain_text("vCPUs")
    expect(vms.locator(".used")).to_have_text("0")
    expect(vms).to_contain_text("Virtual machines")
    kubectl("-n", "quota", "apply", "-f", "-", input=vm_manifest("counted"))
    expect(vms.locator(".used")).to_have_text("1", timeout=WAIT)  # live, no reload
    expect(vms.locator(".share")).to_have_text("25%")
    used = eventually(lambda: kubectl("-n", "quota", "get", "resourcequota", "team", "-o",
                                      "jsonpath={.status.used.compute\\.evroclabs\\.net/vcpu}"))
    assert used != "0"
    expect(vcpu.locator(".used")).to_have_text(used, timeout=WAIT)
    shoot(page, "quotas")


def test_drain_a_host_from_the_fleet_page(browser: Any, cloud: Server, admin_token: str,
                                          kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "moves")
    kubectl("-n", "moves", "apply", "-f", "-", input=vm_manifest("mover", zone="se-sto-a"))
    page = signed_in(browser, cloud, admin_token)
    page.goto(page.url.split("#")[0] + "#/moves/fleet")
    hosts = page.locator("tr[data-host]")
    on = hosts.filter(has_text="mover")
    expect(on).to_have_count(1, timeout=WAIT)
    host = on.get_attribute("data-host")
    assert host in ("a-general-1", "a-general-2")
    other = "a-general-2" if host == "a-general-1" else "a-general-1"
    row = page.locator(f"tr[data-host={host}]")
    row.locator("[data-action=drain]").click()
    expect(row.locator("[data-action=undrain]")).to_be_visible(timeout=WAIT)
    assert kubectl("get", "host", host, "-o", "jsonpath={.spec.drain}") == "true"
    expect(page.locator(f"tr[data-host={other}]")).to_contain_text("mover", timeout=WAIT)
    expect(row).not_to_contain_text("mover", timeout=WAIT)
    assert eventually(lambda: kubectl("-n", "moves", "get", "vm", "mover", "-o",
                                      "jsonpath={.status.virtualMachineStatus}") == "Running")
    row.locator("[data-action=undrain]").click()
    expect(row.locator("[data-action=drain]")).to_be_visible(timeout=WAIT)
    assert kubectl("get", "host", host, "-o", "jsonpath={.spec.drain}") in ("", "false")
