"""Prints a CloudFormation/SAM YAML template as JSON, short-form tags (!Ref, !Sub, !GetAtt, !If...)
turned into their long forms, using cfn-lint's own decoder (so the tests read the template the
way CloudFormation does). Usage: template_json.py TEMPLATE"""

import json
import sys

from cfnlint.decode import decode

template, problems = decode(sys.argv[1])
if problems or template is None:
    for p in problems or []:
        print(p, file=sys.stderr)
    sys.exit(1)
json.dump(template, sys.stdout, default=str)
