#!/usr/bin/python
# Part of the glusterfs_server role (the gluster.gluster collection is not available here).
from __future__ import annotations

DOCUMENTATION = r"""
module: glusterfs_server_volume
short_description: Create, start and configure one GlusterFS volume
description:
  - Reads C(gluster --xml volume info NAME). Creates the volume when it does not exist, starts
    it when O(state=started), and sets each option of O(options) whose value differs from the
    one the volume has (C(gluster volume set)); nothing else is touched.
  - An existing volume whose bricks, replica or arbiter count differ from the request is not
    changed (that would move data); the module fails and says what differs.
options:
  name:
    description: Name of the volume.
    type: str
    required: true
  bricks:
    description:
      - Bricks as C(host:/path), in order; consecutive groups of O(replica) bricks form a
        replica set.
    type: list
    elements: str
    required: true
  replica:
    description: Number of copies; C(1) creates a plain (distributed) volume.
    type: int
    default: 1
  arbiter:
    description: Make the last brick of each replica set an arbiter (needs O(replica=3)).
    type: bool
    default: false
  force:
    description: Pass C(force) to C(volume create), e.g. for bricks on the root file system.
    type: bool
    default: false
  state:
    description: C(present) creates the volume; C(started) also starts it.
    type: str
    choices: [present, started]
    default: started
  options:
    description:
      - Volume options by their full name (C(network.ping-timeout), not C(ping-timeout)).
      - Booleans become C(on)/C(off), numbers their decimal text.
    type: dict
    default: {}
notes:
  - Supports check mode and diff mode (diff of the managed options).
  - On a host where gluster is not installed yet, check mode reports the volume as to be created.
author: apptive platform team
"""

EXAMPLES = r"""
- name: A replica 3 volume with quorum
  glusterfs_server_volume:
    name: apptive
    bricks: [gfs-a:/bricks/apptive, gfs-b:/bricks/apptive, gfs-c:/bricks/apptive]
    replica: 3
    options:
      cluster.quorum-type: auto
"""

RETURN = r"""
created:
  description: Whether the volume was (or, in check mode, would be) created.
  returned: always
  type: bool
started:
  description: Whether the volume was (or would be) started by this run.
  returned: always
  type: bool
options_set:
  description: The options set by this run, with their new values.
  returned: always
  type: dict
volume:
  description: The volume as C(gluster volume info) shows it after the run (empty in check mode
    before the volume exists).
  returned: always
  type: dict
"""

from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.glusterfs_cli import (  # noqa: E402
    VOLUME_STARTED,
    GlusterCli,
    GlusterError,
    Volume,
)


def option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def layout_errors(volume: Volume, bricks: list[str], replica: int, arbiter: bool) -> list[str]:
    errors = []
    if volume.bricks != bricks:
        errors.append(f"bricks are {volume.bricks}, requested {bricks}")
    if volume.replica_count != replica:
        errors.append(f"replica count is {volume.replica_count}, requested {replica}")
    if (volume.arbiter_count > 0) != arbiter:
        errors.append(f"arbiter count is {volume.arbiter_count}, requested arbiter={arbiter}")
    return errors


def create_args(params: dict[str, Any]) -> list[str]:
    args = ["volume", "create", params["name"]]
    if params["replica"] > 1:
        args += ["replica", str(params["replica"])]
        if params["arbiter"]:
            args += ["arbiter", "1"]
    args += ["transport", "tcp", *params["bricks"]]
    if params["force"]:
        args.append("force")
    return args


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "bricks": {"type": "list", "elements": "str", "required": True},
            "replica": {"type": "int", "default": 1},
            "arbiter": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            "state": {"type": "str", "choices": ["present", "started"], "default": "started"},
            "options": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    params = module.params
    name: str = params["name"]
    bricks: list[str] = params["bricks"]
    replica: int = params["replica"]
    if replica < 1 or len(bricks) % replica != 0:
        module.fail_json(msg=f"{len(bricks)} bricks cannot form replica sets of {replica}")
    if params["arbiter"] and replica != 3:
        module.fail_json(msg="arbiter needs replica 3")
    wanted = {str(k): option_text(v) for k, v in params["options"].items()}
    result: dict[str, Any] = {
        "changed": False,
        "created": False,
        "started": False,
        "options_set": {},
        "volume": {},
    }

    binary = module.get_bin_path("gluster", required=not module.check_mode)
    if binary is None:
        result.update(
            changed=True,
            created=True,
            started=params["state"] == "started",
            options_set=wanted,
            msg="gluster is not installed yet",
        )
        module.exit_json(**result)

    cli = GlusterCli(module, binary)
    try:
        volume = cli.volume(name)
        if volume is None:
            result["created"] = True
            if not module.check_mode:
                cli.run_ok(*create_args(params))
                volume = cli.volume(name)
                if volume is None:
                    raise GlusterError(f"volume {name} was created but gluster does not show it")
        else:
            errors = layout_errors(volume, bricks, replica, params["arbiter"])
            if errors:
                module.fail_json(
                    msg=f"volume {name} exists with another layout, left unchanged: "
                    + "; ".join(errors)
                    + ". Changing bricks or replica moves data: do it by hand "
                    "(gluster volume add-brick/remove-brick/replace-brick).",
                    volume=volume.as_dict(),
                )

        if params["state"] == "started" and (volume is None or volume.status != VOLUME_STARTED):
            result["started"] = True
            if not module.check_mode:
                cli.run_ok("volume", "start", name)

        current = volume.options if volume is not None else {}
        to_set = {k: v for k, v in wanted.items() if current.get(k) != v}
        result["options_set"] = to_set
        if to_set and not module.check_mode:
            for key, value in to_set.items():
                cli.run_ok("volume", "set", name, key, value)
        result["diff"] = {
            "before": {"options": {k: current[k] for k in wanted if k in current}},
            "after": {"options": wanted},
        }

        if not module.check_mode:
            volume = cli.volume(name)
            if volume is None:
                raise GlusterError(f"volume {name} disappeared")
            # gluster stores some options under their full name or a canonical value; a key it
            # does not show as requested would be set again on every run. Say so instead.
            differ = {
                k: volume.options.get(k) for k, v in wanted.items() if volume.options.get(k) != v
            }
            if differ:
                module.fail_json(
                    msg="after gluster volume set, these options do not read back as requested "
                    f"(use full option names and canonical values): {differ}",
                    volume=volume.as_dict(),
                )
            result["volume"] = volume.as_dict()
        elif volume is not None:
            result["volume"] = volume.as_dict()
    except GlusterError as exc:
        module.fail_json(msg=str(exc), **result)

    result["changed"] = bool(result["created"] or result["started"] or result["options_set"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
