"""The v2 services and actions, as `/account/` lists them, and how they map onto the engine."""
from dataclasses import dataclass, field

from workers.handlers.icloud_v2 import ICLOUD, V2_DATA_TYPES

__all__ = ["Parameter", "Action", "Service", "SERVICES", "find_service"]


@dataclass(frozen=True)
class Parameter:
    name: str
    slug: str
    type: str  # string | list | date
    optional: bool = False
    description: str = ""
    # A credential: stored sealed apart from the task's other parameters (tasks_app/sealing.py).
    secret: bool = False

    def describe(self) -> dict:
        return {"name": self.name, "slug": self.slug, "type": self.type, "description": self.description,
                "optional": self.optional}


@dataclass(frozen=True)
class Action:
    name: str
    slug: str
    parameters: tuple[Parameter, ...] = ()
    data: tuple[str, ...] = ()  # permissions.data
    description: str = ""

    def describe(self) -> dict:
        return {
            "name": self.name,
            "slug": self.slug,
            "description": self.description,
            "execution": "Asynchronous",
            "parameters": [parameter.describe() for parameter in self.parameters],
            "permissions": {"data": list(self.data)},
        }


@dataclass(frozen=True)
class Service:
    name: str
    slug: str
    source_type: str
    actions: tuple[Action, ...] = field(default_factory=tuple)

    def action(self, slug: str) -> Action | None:
        return next((action for action in self.actions if action.slug == slug), None)

    def describe(self) -> dict:
        return {"name": self.name, "slug": self.slug, "actions": [action.describe() for action in self.actions]}


SERVICES: tuple[Service, ...] = (
    Service(
        name="iCloud",
        slug="icloud",
        source_type=ICLOUD,
        actions=(
            Action("Log In", "log-in", (Parameter("Password", "password", "string", secret=True),),
                   description="Authenticate the account; 2FA accounts answer with 2fa-required."),
            Action("Perform 2FA Challenge", "perform-2fa-challenge",
                   (Parameter("Challenge", "challenge", "string", optional=True),),
                   description="Send a 2FA code to one of the account's trusted devices."),
            Action("Submit 2FA Challenge", "submit-2fa-challenge", (Parameter("Code", "code", "string", secret=True),),
                   description="Complete the log-in with the 2FA code."),
            Action("List Devices", "list-devices", description="The devices of the account."),
            Action(
                "Fetch Data",
                "fetch-data",
                (
                    Parameter("Data", "data", "list"),
                    Parameter("Device", "device", "string", optional=True),
                    Parameter("Since", "since", "date", optional=True),
                ),
                data=tuple(V2_DATA_TYPES),
                description="Fetch the requested data feeds.",
            ),
            Action(
                "Download File",
                "download-file",
                (Parameter("File", "file", "string"), Parameter("Device", "device", "string", optional=True)),
                description="Download one file referenced by a feed.",
            ),
        ),
    ),
)


def find_service(value: str | None) -> Service | None:
    """Services are named by slug or by name, case-insensitively."""
    wanted = (value or "").strip().lower()
    return next((s for s in SERVICES if wanted in (s.slug.lower(), s.name.lower())), None)
