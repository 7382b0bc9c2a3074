"""Names XAPI uses on the wire, in one place.

Values come from the XAPI datamodel (``xenapi-datamodel.json``: the
``vm_power_state``, ``task_status_type`` and ``event_operation`` enums) and
from XAPI's error definitions. Nothing here imports Nova.
"""

# --- VM power states (enum vm_power_state) --------------------------------

POWER_STATE_HALTED = 'Halted'
"""The VM has no domain: it is shut down."""

POWER_STATE_PAUSED = 'Paused'
"""The domain exists but its vCPUs are not scheduled."""

POWER_STATE_RUNNING = 'Running'
"""The domain exists and runs."""

POWER_STATE_SUSPENDED = 'Suspended'
"""The VM's memory image is saved to a suspend VDI; it has no domain."""

POWER_STATES = (POWER_STATE_HALTED, POWER_STATE_PAUSED,
                POWER_STATE_RUNNING, POWER_STATE_SUSPENDED)

# --- Task statuses (enum task_status_type) --------------------------------

TASK_PENDING = 'pending'
"""The task is still running."""

TASK_SUCCESS = 'success'
"""The task finished; its ``result`` holds the XML-RPC encoded value."""

TASK_FAILURE = 'failure'
"""The task failed; its ``error_info`` holds the XAPI error."""

TASK_CANCELLING = 'cancelling'
"""``task.cancel`` was asked and the operation is winding down."""

TASK_CANCELLED = 'cancelled'
"""The task was cancelled."""

TASK_FINISHED_STATES = (TASK_SUCCESS, TASK_FAILURE, TASK_CANCELLED)

# --- event.from (enum event_operation) ------------------------------------

EVENT_ADD = 'add'
"""An object was created; ``snapshot`` holds its record."""

EVENT_MOD = 'mod'
"""An object changed; ``snapshot`` holds its whole new record."""

EVENT_DEL = 'del'
"""An object was destroyed; ``snapshot`` may be absent."""

# --- Error codes the client layer itself reacts to ------------------------

SESSION_INVALID = 'SESSION_INVALID'
"""The session reference is unknown (expired, logged out, host restarted)."""

HOST_IS_SLAVE = 'HOST_IS_SLAVE'
"""Logged into a pool member; parameter 0 is the master's address."""

OTHER_OPERATION_IN_PROGRESS = 'OTHER_OPERATION_IN_PROGRESS'
"""Another operation holds the object; retrying later may succeed."""

EVENTS_LOST = 'EVENTS_LOST'
"""``event.from``: the token is too old; the caller must resynchronise."""

EVENT_FROM_TOKEN_PARSE_FAILURE = 'EVENT_FROM_TOKEN_PARSE_FAILURE'
"""``event.from``: the token is not one the server issued."""

TRANSIENT_ERRORS = frozenset([OTHER_OPERATION_IN_PROGRESS])
"""Errors that ``call`` retries ([xen_stubdom] api_max_retries)."""

# --- Logins ---------------------------------------------------------------

API_VERSION = '2.0'
"""Version string passed to ``session.login_with_password``."""

DEFAULT_ORIGINATOR = 'nova-xen-stubdom'
"""Originator passed to ``session.login_with_password`` (shown by XAPI)."""

NULL_REF = 'OpaqueRef:NULL'
"""XAPI's null reference."""

REF_PREFIX = 'OpaqueRef:'
