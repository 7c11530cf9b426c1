using Portico.Threading;

namespace Portico.Tests.Threading;

public sealed class SlotSetTests
{
    private sealed class Member(int id) : ISlotted
    {
        public int Id { get; } = id;
        public int Slot { get; set; } = -1;
    }

    private static List<int> Ids(SlotSet<Member> set)
    {
        var snapshot = set.RentSnapshot(out var count);
        try
        {
            var ids = new List<int>();
            for (var i = 0; i < count; i++)
            {
                ids.Add(snapshot[i].Id);
            }
            ids.Sort();
            return ids;
        }
        finally
        {
            SlotSet<Member>.ReturnSnapshot(snapshot);
        }
    }

    [Fact]
    public void AddRemove_PastTheFirstArray_KeepsEveryOtherMemberAndItsSlot()
    {
        var set = new SlotSet<Member>();
        var members = new List<Member>();
        for (var i = 0; i < 200; i++)
        {
            members.Add(new Member(i));
            set.Add(members[i]);
        }
        set.Add(members[5]);   // a second add of a member changes nothing

        for (var i = 0; i < 200; i += 3)
        {
            set.Remove(members[i]);
        }
        set.Remove(members[0]);   // nor does a second remove

        var expected = new List<int>();
        for (var i = 0; i < 200; i++)
        {
            if (i % 3 != 0)
            {
                expected.Add(i);
            }
            Assert.Equal(i % 3 == 0, members[i].Slot < 0);
        }
        Assert.Equal(expected, Ids(set));
        var snapshot = set.RentSnapshot(out var count);
        for (var i = 0; i < count; i++)
        {
            Assert.Equal(i, snapshot[i].Slot);
        }
        SlotSet<Member>.ReturnSnapshot(snapshot);
    }

    [Fact]
    public void RentSnapshot_MembersLeavingWhileItIsWalked_SnapshotUnchanged()
    {
        var set = new SlotSet<Member>();
        var a = new Member(1);
        var b = new Member(2);
        set.Add(a);
        set.Add(b);

        var snapshot = set.RentSnapshot(out var count);
        set.Remove(a);
        set.Remove(b);

        Assert.Equal(2, count);
        Assert.Same(a, snapshot[0]);
        Assert.Same(b, snapshot[1]);
        SlotSet<Member>.ReturnSnapshot(snapshot);
        Assert.Empty(Ids(set));
    }

    [Fact]
    public void ForEach_VisitsEveryMember_EvenWhenAVisitRemovesMembers()
    {
        var set = new SlotSet<Member>();
        var members = new List<Member>();
        for (var i = 0; i < 10; i++)
        {
            members.Add(new Member(i));
            set.Add(members[i]);
        }
        var visited = new List<int>();

        set.ForEach(static (member, state) =>
        {
            state.Visited.Add(member.Id);
            state.Set.Remove(member);
        }, (Visited: visited, Set: set));

        visited.Sort();
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], visited);
        Assert.Empty(Ids(set));
    }
}
