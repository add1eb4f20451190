"""Pulumi mocks that hand every resource registration, with its options, to the executor's engine.

`Mocks.new_resource` receives no resource options (`MockResourceArgs` has type, name, inputs,
provider, id, custom). The options do reach the mock monitor: the SDK sends the full
`RegisterResourceRequest` (dependencies already expanded from components to their custom
descendants, property dependencies, parent, protect, deleteBeforeReplace, ignoreChanges and
additionalSecretOutputs translated to provider names, replaceOnChanges, retainOnDelete).
`ExecutorMonitor` overrides `MockMonitor.RegisterResource` to copy them into
`RegistrationArgs` (a `MockResourceArgs`) before calling `ExecutorMocks.new_resource`.

Why not `register_stack_transformation`: legacy transformations see the options but not the
resolved dependency URNs (Outputs flowing into inputs), nor the SDK's own additions (the
`connection` secret output and `triggers[*]` replaceOnChanges that pulumi_command adds), and
the newer `register_resource_transform` is not run at all by the mock monitor.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

InvokeAnswer = Callable[[dict[str, Any]], dict[str, Any]]


class RegistrationArgs(MockResourceArgs):
    """`MockResourceArgs` plus the URN and the resource options taken from the register request."""

    def __init__(self, request: Any, urn: str, inputs: dict[str, Any]) -> None:
        super().__init__(
            typ=request.type,
            name=request.name,
            inputs=inputs,
            provider=request.provider or None,
            resource_id=request.importId or None,
            custom=request.custom or False,
        )
        self.urn = urn
        self.parent: str | None = request.parent or None
        self.dependencies: list[str] = list(request.dependencies)
        self.property_dependencies: dict[str, list[str]] = {
            key: list(deps.urns) for key, deps in request.propertyDependencies.items()
        }
        self.protect: bool | None = request.protect if request.HasField("protect") else None
        self.delete_before_replace: bool = bool(request.deleteBeforeReplace)
        self.ignore_changes: list[str] = list(request.ignoreChanges)
        self.additional_secret_outputs: list[str] = list(request.additionalSecretOutputs)
        self.replace_on_changes: list[str] = list(request.replaceOnChanges)
        self.retain_on_delete: bool = bool(request.retainOnDelete) if request.HasField("retainOnDelete") else False


class Registrar(Protocol):
    """What the mocks delegate to: the engine deciding and carrying out each resource's step."""

    def register(self, args: RegistrationArgs) -> tuple[str | None, dict[str, Any]]:
        """Return (id, output state in SDK form) or raise to fail the resource."""
        ...


class ExecutorMonitor(MockMonitor):
    """Mock monitor that passes the register request's options on to the mocks."""

    # The program's reach check (fleet/hostkeys.py) runs under this monitor, as under the real
    # engine: the lab's hosts are the machines it would dial. Plain unit-test mocks leave it off.
    reaches_hosts = True

    def __init__(self, mocks: ExecutorMocks) -> None:
        super().__init__(mocks)
        self.stack_urn: str | None = None

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
            return resource_pb2.RegisterResourceResponse(urn=urn)
        _ensure_event_loop()
        inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
        args = RegistrationArgs(request, urn, inputs)
        id_, state = self.mocks.new_resource(args)
        obj_proto = _sync_await(rpc.serialize_properties(state, {}))
        self.resources[urn] = MockMonitor.ResourceRegistration(urn, id_ or "", state)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_ or "", object=obj_proto)


def _token() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "A" + "".join(secrets.choice(alphabet) for _ in range(28))


def _owner(args: Mapping[str, Any], config: Mapping[str, str]) -> str:
    return str(config.get("github:owner") or "lab-org")


def default_invokes(config: Mapping[str, str]) -> dict[str, InvokeAnswer]:
    """Answers for the pulumi-github functions the program calls, shaped like the provider's.

    Registration tokens are new random values on every call and expire an hour later, as
    GitHub's API and the provider's invoke behave (previews included).
    """

    def get_repository(args: dict[str, Any]) -> dict[str, Any]:
        full_name = args.get("fullName") or f"{_owner(args, config)}/{args.get('name')}"
        owner, _, name = str(full_name).partition("/")
        return {
            "id": name,
            "name": name,
            "fullName": f"{owner}/{name}",
            "nodeId": f"R_{name}",
            "repoId": 1000,
            "htmlUrl": f"https://github.com/{owner}/{name}",
            "defaultBranch": "main",
            "private": True,
            "visibility": "private",
            "archived": False,
            "topics": [],
            "description": "",
        }

    def get_organization(args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("name") or _owner(args, config))
        return {
            "id": name,
            "name": name,
            "login": name,
            "orgname": name,
            "nodeId": f"O_{name}",
            "description": "",
            "plan": "free",
            "repositories": [],
            "members": [],
        }

    def registration_token(args: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {"token": _token(), "expiresAt": int(time.time()) + 3600}
        if "repository" in args:
            answer["repository"] = args["repository"]
            answer["id"] = str(args["repository"])
        else:
            answer["id"] = _owner(args, config)
        return answer

    org_invoke = "github:index/getActionsOrganizationRegistrationToken:getActionsOrganizationRegistrationToken"
    return {
        "github:index/getRepository:getRepository": get_repository,
        "github:index/getOrganization:getOrganization": get_organization,
        "github:index/getActionsRegistrationToken:getActionsRegistrationToken": registration_token,
        org_invoke: registration_token,
    }


class ExecutorMocks(Mocks):
    """Resource registrations go to the engine; invokes are answered from a token->function map."""

    def __init__(self, registrar: Registrar, invokes: Mapping[str, InvokeAnswer]) -> None:
        self.registrar = registrar
        self.invokes = dict(invokes)
        self.calls: list[str] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if not isinstance(args, RegistrationArgs):
            raise TypeError("the executor needs ExecutorMonitor to register resources")
        return self.registrar.register(args)

    def call(self, args: MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        """Answer an invoke; a bare dict (no failures list) is what MockMonitor.Invoke expects."""
        answer = self.invokes.get(args.token)
        if answer is None:
            raise NotImplementedError(f"the executor has no answer for invoke {args.token}")
        self.calls.append(args.token)
        plain = {key: rpc.unwrap_rpc_secret(value) for key, value in (args.args or {}).items()}
        return answer(plain)
