#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the `slurm` tests and for trying the Slurm executor:
#   bash tests/slurm/cluster.sh up     install (Debian packages) and start it; idempotent
#   bash tests/slurm/cluster.sh down   stop its daemons (the packages stay)
#   bash tests/slurm/cluster.sh status one line: whether it answers
# Root only, Debian or Ubuntu, no systemd needed: munged, MariaDB + slurmdbd (so that `sacct` works),
# slurmctld and slurmd are started as plain daemons. One node named after this host, with all its
# CPUs, in partition `debug`; cores are scheduled, not memory; no cgroups, no GPUs.
# SLURM_ACCOUNTING=0 starts it without slurmdbd (sacct then says accounting is disabled).
set -euo pipefail
cmd=${1:-up}
ACCOUNTING=${SLURM_ACCOUNTING:-1}
H=$(hostname -s)
CONF=/etc/slurm/slurm.conf
say() { echo "cluster.sh: $*"; }

need_root() {
    [ "$(id -u)" = 0 ] || { say "must run as root (it installs packages and starts daemons)"; exit 2; }
}

answers() { timeout 5 sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc|comp|plnd)'; }

install_packages() {
    local pkgs="slurmctld slurmd slurm-client munge"
    [ "$ACCOUNTING" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
    local missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || { say "no apt-get here: install$missing by hand"; exit 2; }
    say "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

write_conf() {
    local mem acct
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    if [ "$ACCOUNTING" = 1 ]; then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819"
    else
        acct="AccountingStorageType=accounting_storage/none"
    fi
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
    cat > "$CONF.new" <<CONF
# written by factrecall's tests/slurm/cluster.sh: one node, no cgroups, no systemd
ClusterName=factrecall
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$acct
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
MinJobAge=300
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$CONF.new" "$CONF"
}

start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
}

start_dbd() {
    [ "$ACCOUNTING" = 1 ] || return 0
    if ! mysqladmin ping >/dev/null 2>&1; then
        /etc/init.d/mariadb start >/dev/null
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'factrecall';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=$H
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=factrecall
StorageLoc=slurm_acct_db
CONF
    chmod 600 /etc/slurm/slurmdbd.conf
    pgrep -x slurmdbd >/dev/null || slurmdbd
    for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
    sacctmgr -n -P list cluster format=cluster | grep -qx factrecall || sacctmgr -i add cluster factrecall >/dev/null
}

up() {
    need_root
    local t0=$SECONDS
    install_packages
    local t1=$SECONDS
    if answers && [ -f "$CONF" ] && grep -q "^NodeName=$H " "$CONF"; then
        say "already up ($(sinfo -h -o '%P %D node(s) %c CPUs %t' | head -1))"
        return 0
    fi
    write_conf
    start_munge
    start_dbd
    pgrep -x slurmctld >/dev/null && { scontrol reconfigure >/dev/null 2>&1 || true; } || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 100); do answers && break; sleep 0.2; done
    if ! answers; then
        scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true
        sleep 1
    fi
    answers || { say "slurmd did not come up: see /var/log/slurm/slurmctld.log and slurmd.log"; exit 1; }
    say "up in $((SECONDS - t0)) s (installing $((t1 - t0)) s, starting $((SECONDS - t1)) s): $(sinfo -h -o '%P %D node(s) %c CPUs %t' | head -1)"
}

down() {
    need_root
    for d in slurmd slurmctld slurmdbd; do pkill -x "$d" 2>/dev/null || true; done
    for _ in $(seq 50); do pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x slurmdbd >/dev/null || break; sleep 0.2; done
    say "down (munged and MariaDB left running)"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    status) if answers; then say "up: $(sinfo -h -o '%P %D node(s) %c CPUs %t' | head -1)"; else say "not answering"; exit 1; fi ;;
    *) say "usage: cluster.sh up|down|status"; exit 2 ;;
esac
