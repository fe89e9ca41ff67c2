#!/usr/bin/env bash
# The first command of README.md: the daemon on SQLite with the example data. It imports the example world,
# submits every example request, runs the daemon until each one is decided and its notifications are written,
# then shows what a requester and an operator would see: the decisions, a Non Accolta with its reasons, a
# referral with the rule's explanation, and the e-mails and SMS it produced.
#
# Everything lives under var/ (config/smart-task.yaml): the database var/smart-task.db, the e-mails in the Maildir
# var/mail, the SMS in var/sms. Running it again is safe: the example requests carry idempotency keys, so they
# are not queued twice.
#
# Usage: scripts/demo.sh [path/to/smart-taskd]   (default: build it with cargo, honouring CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
    bin=$1
else
    echo "== building smart-taskd (cargo build: a few minutes the first time)"
    cargo build --locked
    bin="${CARGO_TARGET_DIR:-target}/debug/smart-taskd"
fi
run() { "$bin" "$@"; }

echo
echo "== the database and the reference data (examples/facts.yaml)"
run migrate
run facts import examples/facts.yaml

echo
echo "== the rules (rules/), vetted by every gate and promoted: the daemon runs what was promoted, not what is saved"
run rules promote rules --author demo --reason "Le regole di esempio: i cinque Smart-Task e il quesito alla sede"
run rules versions

echo
echo "== the example requests (examples/requests)"
declare -A protocollo
for f in examples/requests/*; do
    # rdi-07 says "si allega diffida": the diffida goes with it (examples/allegati), inspected before it is stored.
    attach=()
    case "$(basename "$f")" in rdi-07-*) attach=(--allegato examples/allegati/diffida.pdf) ;; esac
    line=$(run submit "$f" "${attach[@]}")
    echo "$(basename "$f"): $line"
    protocollo[$(basename "$f")]=${line%% *}
done

echo
echo "== the daemon, until every request is decided and every notification due is written"
run run --exit-when-idle

echo
echo "== the decisions"
run list

echo
echo "== a Non Accolta, with its reasons (examples/requests/rdi-05-non-accolta-decorrenza-passata.yaml)"
run show "${protocollo[rdi-05-non-accolta-decorrenza-passata.yaml]}"

echo
echo "== the Fascicolo of the position 5678901234 with the esito PDF of each closed request (var/esiti)"
run fascicolo 5678901234 --pdf var/esiti

echo
echo "== a referral to the sede's operators, with the rule's explanation (examples/requests/rdi-07-rinvio-motivazione-altro.yaml)"
run explain "${protocollo[rdi-07-rinvio-motivazione-altro.yaml]}"

echo
echo "== its attachment, as the operator reads it (var/diffida-rdi-07.pdf)"
run show "${protocollo[rdi-07-rinvio-motivazione-altro.yaml]}" | sed -n '/allegati:/,/creata il:/p'
rm -f var/diffida-rdi-07.pdf
run allegato "${protocollo[rdi-07-rinvio-motivazione-altro.yaml]}" 1 --out var/diffida-rdi-07.pdf

echo
echo "== a quesito to the sede (examples/requests/que-01-*): referred by its rule, answered by an operator of sede 7000"
quesito=${protocollo[que-01-rinvio-regolarita-contributiva.yaml]}
if run show "$quesito" --json | grep -q '"stato": *"in_carico"'; then
    run operator close "$quesito" --esito accolta --operatore demo \
        --nota "Il versamento del 16/03 risulta ora abbinato alla posizione: il DURC è regolare dal 20/03."
    run run --exit-when-idle
fi
run show "$quesito"
answer=$(grep -l "^Subject: Risposta al quesito $quesito" var/mail/new/*.eml | tail -n 1 || true)
if [ -n "$answer" ] && command -v python3 >/dev/null; then
    echo
    echo "== the sede's answer as the requester received it ($answer)"
    python3 -c 'import email, email.policy, sys
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
print("Subject:", m["subject"]); print(); print(m.get_body(("plain",)).get_content())' "$answer"
fi

echo
echo "== the notifications (recipients masked)"
run notifications list

# The Non Accolta as its requester received it: the last e-mail about that request in the Maildir.
nonaccolta=${protocollo[rdi-05-non-accolta-decorrenza-passata.yaml]}
mail=$(grep -l "^Subject: Richiesta $nonaccolta non accolta" var/mail/new/*.eml | tail -n 1 || true)
if [ -n "$mail" ]; then
    echo
    echo "== the e-mail of the Non Accolta $nonaccolta ($mail)"
    if command -v python3 >/dev/null; then
        python3 -c 'import email, email.policy, sys
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
print("Subject:", m["subject"]); print("To:", m["to"]); print()
print(m.get_body(("plain",)).get_content())' "$mail"
    else
        cat "$mail"
    fi
fi
sms=$(ls var/sms/*.txt 2>/dev/null | head -n 1 || true)
if [ -n "$sms" ]; then
    echo
    echo "== an SMS ($sms)"
    cat "$sms"
fi
echo
echo "== written: the database var/smart-task.db, $(ls var/mail/new | wc -l) e-mails in the Maildir var/mail/new," \
     "$(ls var/sms 2>/dev/null | wc -l) SMS in var/sms"
