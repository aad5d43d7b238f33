"""reloadplan: what a reload changes (pure)."""

from dataclasses import replace
from ipaddress import IPv4Address

from ecmpd.configmodel import Config, Wan
from ecmpd.reloadplan import owned_by, plan_reload

A = Wan("a", "ethA", IPv4Address("10.1.0.1"), 1, 1)
B = Wan("b", "ethB", IPv4Address("10.2.0.1"), 2, 2)
C = Wan("c", "ethC", IPv4Address("10.3.0.1"), 3, 3)
OLD = Config(lan_interfaces=("lan0",), wans=(A, B, C))


def test_same_config_changes_nothing():
    plan = plan_reload(OLD, OLD)
    assert plan.added == plan.removed == plan.rejudged == plan.stale_marks == plan.renumbered == ()
    assert not plan.reinstall


def test_weight_and_probe_changes_keep_everything():
    new = replace(OLD, wans=(replace(A, weight=9), B, C))
    plan = plan_reload(OLD, new)
    assert plan.rejudged == () and plan.stale_marks == ()


def test_added_and_removed_wans():
    d = Wan("d", "ethD", IPv4Address("10.4.0.1"), 1, 4)
    plan = plan_reload(OLD, replace(OLD, wans=(A, C, d)))
    assert plan.added == ("d",) and plan.removed == ("b",)
    assert plan.stale_marks == (0x20000,)          # b's connections go, a's and c's stay


def test_renumbering_resets_only_the_renumbered():
    plan = plan_reload(OLD, replace(OLD, wans=(A, replace(C, id=2))))
    assert plan.renumbered == (("c", 3, 2),)
    assert set(plan.stale_marks) == {0x20000, 0x30000}   # b removed, c's old mark
    assert plan.rejudged == ()


def test_new_gateway_or_interface_is_judged_again():
    plan = plan_reload(OLD, replace(OLD, wans=(replace(A, gateway=IPv4Address("10.1.0.9")),
                                               replace(B, interface="ethX"), C)))
    assert plan.rejudged == ("a", "b")
    assert plan.stale_marks == (0x20000,)          # b moved interface; a kept its mark


def test_ownership_numbers_force_a_reinstall():
    for change in ({"route_proto": 237}, {"route_metric": 5}, {"table_base": 2000},
                   {"rule_priority": 3000}):
        new = replace(OLD, **change)
        assert owned_by(new) != owned_by(OLD)
        assert plan_reload(OLD, new).reinstall
    assert not plan_reload(OLD, replace(OLD, hash="l3")).reinstall


def test_a_changed_ipv6_gateway_or_version_set_rejudges_the_wan() -> None:
    from ipaddress import IPv6Address
    from dataclasses import replace as rep
    from ecmpd.configmodel import Config, Wan
    from ecmpd.reloadplan import plan_reload
    w = Wan("a", "eth1", None, gateway6=IPv6Address("fe80::1"), families=(6,))
    old = Config(lan_interfaces=("lan0",), wans=(w,))
    assert plan_reload(old, old).rejudged == ()
    for changed in (rep(w, gateway6=IPv6Address("fe80::2")), rep(w, gateway6=None),
                    rep(w, families=(4, 6))):
        assert plan_reload(old, rep(old, wans=(changed,))).rejudged == ("a",)


def test_a_nat_mode_change_keeps_health_and_flows() -> None:
    """masquerade -> snat -> none: only the nat chain changes (the table is replaced in
    one transaction); health, probers and other WANs' flows stay; what was NATed under
    the old mode is flushed (`nat_changed`)."""
    from ecmpd import nftrules
    snat = replace(OLD, wans=(replace(A, nat=((4, "snat", IPv4Address("10.1.0.10")),)), B, C))
    none = replace(OLD, wans=(replace(A, nat=((4, "none"),)), B, C))
    for old, new in ((OLD, snat), (snat, none), (none, OLD)):
        plan = plan_reload(old, new)
        assert (plan.rejudged, plan.stale_marks, plan.reinstall) == ((), (), False)
        assert plan.nat_changed == (("a", 4),)
        assert nftrules.digest(old) != nftrules.digest(new)
        assert [r for r in nftrules.render_rules(old) if r[0] != "nat"] == \
            [r for r in nftrules.render_rules(new) if r[0] != "nat"]
    moved = replace(OLD, wans=(replace(A, nat=((4, "snat", IPv4Address("10.1.0.11")),)), B, C))
    assert plan_reload(snat, moved).nat_changed == (("a", 4),)   # another floating address


def test_a_nat_change_names_the_wan_and_only_the_versions_whose_mode_changed():
    from ipaddress import IPv6Address
    dual = replace(A, gateway6=IPv6Address("fe80::1"), families=(4, 6))
    old = replace(OLD, wans=(dual, B, C))
    assert plan_reload(old, old).nat_changed == ()
    six = replace(old, wans=(replace(dual, nat=((6, "none"),)), B, C))
    assert plan_reload(old, six).nat_changed == (("a", 6),)
    assert plan_reload(six, old).nat_changed == (("a", 6),)            # and back
    both = replace(old, wans=(replace(dual, nat=((4, "none"), (6, "none"))),
                              replace(B, nat=((4, "none"),)), C))
    assert plan_reload(six, both).nat_changed == (("a", 4), ("b", 4))
    # modes are compared as values: any other mode is a change too
    assert plan_reload(six, replace(six, wans=(replace(dual, nat=((6, "other"),)), B, C))
                       ).nat_changed == (("a", 6),)
    # a version the WAN no longer (or not yet) carries has no connections to keep apart
    four = replace(old, wans=(replace(dual, families=(4,), gateway6=None), B, C))
    assert plan_reload(six, four).nat_changed == ()
    # a WAN whose mark changed loses all its connections anyway (stale_marks)
    moved = plan_reload(old, replace(old, wans=(replace(dual, id=4, nat=((4, "none"),)), B, C)))
    assert moved.nat_changed == () and 0x10000 in moved.stale_marks
