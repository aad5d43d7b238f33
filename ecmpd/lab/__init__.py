"""The network-namespace lab: topology, builder, faults and traffic tools.

Used by the integration tests, the demo and the benchmarks::

    from ecmpd.lab import Lab, seed_spec
    with Lab(seed_spec()) as lab:
        lab.start_servers()
        print(lab.new_flows(3))
"""

from ecmpd.lab.dhcp import DhcpEvent, DhcpWan
from ecmpd.lab.driver import FlowRun, HeldFlows, TrafficError
from ecmpd.lab.flood import Flood, FloodResult
from ecmpd.lab.lab import Lab
from ecmpd.lab.lines import Line
from ecmpd.lab.load import Load, LoadError, StreamResult
from ecmpd.lab.netns import LabCommandError, random_prefix, sweep
from ecmpd.lab.ptp import PtpSession, PtpWan
from ecmpd.lab.topology import LabSpec, LabWan, make_spec, seed_spec
from ecmpd.lab.traffic import FlowResult, HeldResult, fault_offset, outage

__all__ = [
    "Lab", "LabSpec", "LabWan", "seed_spec", "make_spec",
    "FlowResult", "HeldResult", "FlowRun", "HeldFlows", "TrafficError", "LabCommandError",
    "outage", "fault_offset", "random_prefix", "sweep",
    "Line", "Load", "LoadError", "StreamResult", "Flood", "FloodResult",
    "DhcpWan", "DhcpEvent", "PtpWan", "PtpSession",
]
