"""The runner-fleet policy pack: `pulumi preview --policy-pack policy` (README "Safeguards")."""

from policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(name="runner-fleet", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
