"""Privacy audit (the top layer: it drives whole aggregators and reads what each scheme says about itself).

1. privacy_report (report): a real simulated round, every message recorded (recording); per party kind
   what it received, what the scheme says it learns alone and who must collude with it
   (Aggregator.roles_view), the dropouts the round survives (measured), and the epsilon of the noise
   that party actually sees, per round and composed over rounds.
2. transcript_check (transcript): a distinguisher on one party's view of two input sets with the same
   aggregate; at chance for a scheme without a gross leak (it flags Plaintext).
3. one_run_audit (canaries): Steinke, Nasr and Jagielski's one-run lower bound on one round's epsilon,
   through the real scheme.
4. audit_run (run): the same over a whole training run, beside the accountant's cumulative epsilon and
   the accuracy, with a plot.

`securefl audit` (and `securefl audit --run`) print them.
"""

from securefl.audit.canaries import AuditResult, epsilon_lower_bound, one_run_audit, p_value
from securefl.audit.report import PartyView, PrivacyReport, dropouts_tolerated, party_epsilon, privacy_report
from securefl.audit.run import RunAudit, RunRound, audit_run
from securefl.audit.transcript import TranscriptCheck, transcript_check

__all__ = ["AuditResult", "PartyView", "PrivacyReport", "RunAudit", "RunRound", "TranscriptCheck", "audit_run",
           "dropouts_tolerated", "epsilon_lower_bound", "one_run_audit", "p_value", "party_epsilon",
           "privacy_report", "transcript_check"]
