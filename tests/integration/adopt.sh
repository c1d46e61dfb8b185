#!/usr/bin/env bash
# The destination takes the guest from the stream: one started with the
# default workload receives a random guest and verifies; one started with
# a different --workload says it ignores it. A different shape (vCPUs,
# memory) is refused with both values named, and the source runs on.
. "$(dirname "$0")/lib.sh"
mig() { # SRC PORT NAME: migrate, keep the report in $T/NAME.json
	"$FERRY" migrate "$T/$1.sock" "tcp:127.0.0.1:$2" --json >"$T/$3.json" 2>"$T/$3.log"
}
p1=$(free_port)
start_vm dst1 --memory 64M --incoming "tcp:127.0.0.1:$p1"
start_vm src1 --memory 64M --workload random --dirty-rate 30
mig src1 "$p1" m1 || fail "migration to a default destination failed: $(tail -n1 "$T/m1.json")"
[ "$(json_field "$T/m1.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m1.json")"
[ "$(status_field dst1 'd["guest"]["workload"]')" = '"random"' ] ||
	fail "destination runs $(status_field dst1 'd["guest"]["workload"]')"
guest_runs dst1 || fail "the adopted guest does not run"
sleep 0.5
[ "$(status_field dst1 'd["guest"]["check_errors"]')" = 0 ] || fail "the adopted guest found bad pages"

p2=$(free_port)
start_vm dst2 --memory 64M --workload idle --incoming "tcp:127.0.0.1:$p2"
start_vm src2 --memory 64M --workload random
mig src2 "$p2" m2 || fail "migration to an idle destination failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m2.json")"
grep -q "ignoring --workload idle: the guest runs random" "$T/dst2.log" ||
	fail "no note about the ignored --workload in the destination's log"

p3=$(free_port)
start_vm dst3 --memory 64M --vcpus 3 --incoming "tcp:127.0.0.1:$p3"
start_vm src3 --memory 64M --workload random --vcpus 2
mig src3 "$p3" m3 && fail "a 2-vCPU guest migrated into a 3-vCPU VM"
err=$(json_field "$T/m3.json" 'd["error"]')
case $err in *2*3* | *3*2*) ;; *) fail "the vCPU mismatch error does not name both counts: $err" ;; esac
source_intact src3

p4=$(free_port)
start_vm dst4 --memory 128M --incoming "tcp:127.0.0.1:$p4"
mig src3 "$p4" m4 && fail "a 64 MiB guest migrated into a 128 MiB VM"
err4=$(json_field "$T/m4.json" 'd["error"]')
case $err4 in *67108864*134217728* | *134217728*67108864* | *64*128*MiB* | *128*64*MiB*) ;;
*) fail "the memory mismatch error does not name both sizes: $err4" ;; esac
source_intact src3
pass "adopted random from the stream; refused: $err; $err4"
