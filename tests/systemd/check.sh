#!/bin/sh
# Inside the booted test system: every check of issue 9 against sevd.service and
# sevd-hardware.service, as root and as an unprivileged VMM user in group kvm. One line per
# check in /sevd-check/report ("ok: ..." or "FAIL: ..."), the last one "N passed, M failed".
# The clients: sevclient (tests/c/sevclient.c) and, when present, virtee's sevctl.
set -u
dir=/sevd-check
report=$dir/report
: > "$report"
pass=0 fail=0
PATH=$dir:$PATH

note() { echo "$*" >> "$report"; }
check() {
  what=$1; shift
  echo "== $what: $*"
  if "$@"; then note "ok: $what"; pass=$((pass + 1)); else note "FAIL: $what"; fail=$((fail + 1)); fi
}
# As the VMM user (in group kvm) or as nobody (in no group).
as_vmm() { setpriv --reuid=vmm --regid=vmm --init-groups "$@"; }
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
main_pid() { systemctl show -p MainPID --value "$1"; }
# Waits up to $2 seconds for a command to succeed.
within() { t=$1; shift; i=0; while [ $i -lt $((t * 10)) ]; do "$@" && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }
answers() { sevclient info "$1" > /dev/null 2>&1; }
mounted() { grep -q " $1 " /proc/1/mountinfo; }
mounts_at() { grep -c " $1 " /proc/1/mountinfo; }
mode_of() { [ "$(stat -c '%a %U %G' "$1")" = "$2" ]; }
same_mnt_ns() { [ "$(readlink /proc/1/ns/mnt)" = "$(readlink /proc/"$(main_pid "$1")"/ns/mnt)" ]; }
passed_all() { sevclient check "$1" > $dir/check.out 2>&1; tail -n 1 $dir/check.out | grep -q ", 0 failed"; }
journal_has() { journalctl -q -u "$1" --no-pager | grep -q "$2"; }
not() { ! "$@"; }

useradd -M -s /usr/sbin/nologin -G kvm vmm

# --- 1. sevd.service on a fresh host ---------------------------------------------------
check "sevd.service is active after boot" systemctl is-active -q sevd
check "group kvm was made (sysusers.d)" getent group kvm
check "group sev-vmm was made (sysusers.d)" getent group sev-vmm
check "/var/lib/sevd is 0700 root (tmpfiles.d)" mode_of /var/lib/sevd "700 root root"
check "sevd shares PID 1's mount namespace" same_mnt_ns sevd
for n in /dev/sev /dev/sev-vm /run/sevd; do
  check "$n is mounted where PID 1 sees it" mounted $n
done
check "/dev/sev is root:kvm 0660" mode_of /dev/sev "660 root kvm"
check "/dev/sev-vm is root:kvm 0660" mode_of /dev/sev-vm "660 root kvm"
check "/run/sevd/sev is root:kvm 0660" mode_of /run/sevd/sev "660 root kvm"
check "the C client's checks pass as root" passed_all /dev/sev
check "the C client works as a VMM user in group kvm" as_vmm sevclient info /dev/sev
check "a user in no group cannot open /dev/sev" not as_nobody sevclient info /dev/sev
if [ -x $dir/sevctl ]; then
  check "virtee sevctl show flags, as the VMM user" sh -c "setpriv --reuid=vmm --regid=vmm --init-groups $dir/sevctl show flags | grep -qx es"
fi
systemd-analyze security sevd --no-pager > $dir/security.txt 2>&1
note "score: $(grep -i 'overall exposure level' $dir/security.txt)"

# --- 2. life cycle -----------------------------------------------------------------------
# Reload: a client keeps its open file; the new policy holds for its next command.
mkfifo $dir/in
as_vmm sevclient hold /dev/sev < $dir/in > $dir/hold.out 2>&1 &
exec 3> $dir/in
echo >&3; check "a held client's first command" within 5 sh -c "tail -n 1 $dir/hold.out | grep -qx ok"
cp /etc/sevd/policy.yaml $dir/policy.saved
printf 'rules:\n  - classes: [launch]\n    groups: [kvm]\n  - classes: [read, manage, reset, launch, debug]\n    users: [root]\n' > /etc/sevd/policy.yaml
systemctl reload sevd
# A reload is SIGHUP: `systemctl reload` returns before sevd has reread the file, so the held
# client asks again until the answer changes (or 5 s pass).
held_says() { echo >&3; sleep 0.2; tail -n 1 $dir/hold.out | grep -qx "$1"; }
check "after reload the new policy holds for the same open file (EPERM)" within 5 held_says 'errno 1'
echo 'rules: [ {classes: [everything], users: [root]} ]' > /etc/sevd/policy.yaml
systemctl reload sevd
check "a bad policy at reload: the unit stays up" systemctl is-active -q sevd
check "a bad policy at reload: the journal says why" within 5 journal_has sevd "policy not reloaded"
cp $dir/policy.saved /etc/sevd/policy.yaml
systemctl reload sevd
check "the held client is served again after the good policy returns" within 5 held_says ok
exec 3>&-

# Restart keeps the platform's keys.
sevclient pdh /dev/sev > $dir/pdh.before
systemctl restart sevd
check "restart: active again" systemctl is-active -q sevd
sevclient pdh /dev/sev > $dir/pdh.after
check "restart keeps the platform's keys (same PDH)" cmp -s $dir/pdh.before $dir/pdh.after

# kill -9: systemd restarts it; the stale mount is detached; it serves again.
old=$(main_pid sevd)
kill -9 "$old"
check "kill -9: restarted automatically" within 20 sh -c "[ \"\$(systemctl show -p MainPID --value sevd)\" != 0 ] && [ \"\$(systemctl show -p MainPID --value sevd)\" != $old ] && systemctl is-active -q sevd"
check "kill -9: serves again" within 10 answers /dev/sev
check "kill -9: one mount at /dev/sev, the stale one detached" sh -c "[ \$(grep -c ' /dev/sev ' /proc/1/mountinfo) -eq 1 ]"
sevclient pdh /dev/sev > $dir/pdh.kill
check "kill -9: the keys are kept" cmp -s $dir/pdh.before $dir/pdh.kill

# Stop: no mount, no placeholder.
systemctl stop sevd
check "stop: no mount at /dev/sev" not mounted /dev/sev
check "stop: no mount at /run/sevd" not mounted /run/sevd
check "stop: no placeholder /dev/sev" test ! -e /dev/sev
check "stop: no placeholder /dev/sev-vm" test ! -e /dev/sev-vm

# A state directory others could write: a clear journal line, no restart loop.
chmod 0777 /var/lib/sevd
systemctl start sevd
sleep 5
check "a bad state directory: the unit failed" systemctl is-failed -q sevd
check "a bad state directory: no restart loop" sh -c "[ \$(systemctl show -p NRestarts --value sevd) -eq 0 ]"
check "a bad state directory: the journal says why" journal_has sevd "group or others may write"
chmod 0700 /var/lib/sevd
systemctl reset-failed sevd
systemctl start sevd
check "fixed: active again" systemctl is-active -q sevd
systemctl disable --now sevd

# --- the hardware unit --------------------------------------------------------------------
# a) Moving the kernel's node aside and back: a character device stands in (it answers no
# SEV command; only the files are checked here).
mknod -m 0600 /dev/sev c 1 3
/sevd-check/install.sh --hardware --bin /usr/local/bin/sevd > $dir/install-hw.log 2>&1
check "hardware unit: active" systemctl is-active -q sevd-hardware
check "hardware unit: the node is moved to /dev/sev-hw" test -c /dev/sev-hw
check "hardware unit: /dev/sev-hw is root:sev-vmm 0660" mode_of /dev/sev-hw "660 root sev-vmm"
check "hardware unit: /dev/sev is sevd's drop-in" mounted /dev/sev
check "hardware unit: sevd shares PID 1's mount namespace" same_mnt_ns sevd-hardware
systemctl stop sevd-hardware
check "hardware unit stopped: the node is back at /dev/sev" test -c /dev/sev
check "hardware unit stopped: with its owner and mode" mode_of /dev/sev "600 root root"
check "hardware unit stopped: no /dev/sev-hw" test ! -e /dev/sev-hw
rm -f /dev/sev

# b) Chained in front of a software sevd standing in for the device.
systemd-run --quiet --unit=standin -p Type=notify /usr/local/bin/sevd --state-dir /var/lib/standin --mountpoint /run/standin
mkdir -p /etc/systemd/system/sevd-hardware.service.d
printf '[Service]\nEnvironment=SEVD_HW_DEVICE=/run/standin/sev\n' > /etc/systemd/system/sevd-hardware.service.d/standin.conf
systemctl daemon-reload
systemctl start sevd-hardware
check "chained: active" systemctl is-active -q sevd-hardware
check "chained: the C client's checks pass through the chain" passed_all /dev/sev
check "chained: the VMM user reads through the policy" as_vmm sevclient info /dev/sev
check "chained: the policy is at /etc/sevd/policy.yaml" test -s /etc/sevd/policy.yaml
check "chained: the audit log at /var/log/sevd/audit.log has the commands" grep -q '"command":"SEV_PLATFORM_STATUS"' /var/log/sevd/audit.log
systemctl stop sevd-hardware standin
check "chained, stopped: no mount at /dev/sev" not mounted /dev/sev

note "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
