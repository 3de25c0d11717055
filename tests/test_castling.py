"""The α schedule, the residual branches and the castling switch (tutorial 04)."""

import pytest
import torch

from minicastling.course import toy
from minicastling.castling import CastlingAttention, set_alpha
from minicastling.branches import GridConv2d, TokenConv1d
from minicastling.schedule import AlphaSchedule


@pytest.mark.parametrize("shape", ["cosine", "linear", "step"])
def test_schedule_holds_decays_and_reaches_exactly_zero(shape):
    schedule = AlphaSchedule(alpha0=2.0, hold=0.2, end=0.7, shape=shape)
    values = [schedule(i / 1000) for i in range(1001)]
    assert values[0] == 2.0 and schedule(0.19) == 2.0
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert schedule(0.7) == 0.0 and schedule(1.0) == 0.0
    assert schedule(0.69) > 0.0
    if shape == "linear":
        assert schedule(0.45) == pytest.approx(1.0)


def test_schedule_errors():
    with pytest.raises(ValueError, match=r"hold <= end < 1.*end=1.0.*castling would change"):
        AlphaSchedule(end=1.0)
    with pytest.raises(ValueError, match="unknown shape 'exp'"):
        AlphaSchedule(shape="exp")
    with pytest.raises(ValueError, match="alpha0 must be a finite number >= 0"):
        AlphaSchedule(alpha0=-1)
    with pytest.raises(ValueError, match=r"fraction of training done, in \[0, 1\]; got 1.5"):
        AlphaSchedule()(1.5)


def trained_student(schedule, steps=60):
    teacher = toy.make_teacher(dim=16, num_heads=2, sharpness=2.0)
    student = toy.make_student(teacher, alpha=1.0)
    toy.fit(student, teacher, steps, schedule=schedule, progress=False)
    return student.eval()


def test_castling_after_alpha_reaches_zero_changes_nothing():
    student = trained_student(AlphaSchedule(end=0.5))
    assert student.alpha == 0.0
    x = torch.randn(4, 64, 16)
    before = student(x)
    student.castle()
    assert student.castled and torch.equal(student(x), before)


def test_castling_early_is_refused_and_forcing_it_changes_outputs():
    student = trained_student(schedule=None)
    assert student.alpha == 1.0
    x = torch.randn(4, 64, 16)
    before = student(x)
    with pytest.raises(RuntimeError, match=r"alpha=1 changes the model's outputs.*castle\(force=True\)"):
        student.castle()
    assert not student.castled and torch.equal(student(x), before)
    with pytest.warns(RuntimeWarning, match="alpha=1 changes the model's outputs"):
        student.castle(force=True)
    assert (student(x) - before).abs().max() > 1e-3
    with pytest.raises(RuntimeError, match="castled"):
        student.set_alpha(0.5)


def test_auxiliary_branch_contributes_while_alpha_positive_in_eval_mode():
    torch.manual_seed(0)
    module = CastlingAttention(16, 2, alpha=1.0).eval()
    x = torch.randn(2, 36, 16)
    with_branch = module(x)
    module.set_alpha(0.0)
    assert (module(x) - with_branch).abs().max() > 1e-4


def test_state_dict_keeps_alpha_and_castled():
    module = CastlingAttention(16, 2, alpha=0.3)
    copy = CastlingAttention(16, 2, alpha=1.0)
    copy.load_state_dict(module.state_dict())
    assert copy.alpha == 0.3 and not copy.castled
    module.set_alpha(0.0)
    module.castle()
    copy.load_state_dict(module.state_dict())
    assert copy.castled and copy.alpha == 0.0


def test_set_alpha_reaches_every_castling_module():
    model = torch.nn.Sequential(CastlingAttention(8, 2), torch.nn.ReLU(), CastlingAttention(8, 2))
    set_alpha(model, 0.25)
    assert [m.alpha for m in model if isinstance(m, CastlingAttention)] == [0.25, 0.25]
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got nan"):
        set_alpha(model, float("nan"))


def receptive_field(branch, tokens, dim, heads, query):
    """Which input tokens influence output token `query`: (tokens,) bool."""
    v = torch.randn(1, heads, tokens, dim // heads, requires_grad=True)
    branch(v)[0, :, query].sum().backward()
    return v.grad[0].abs().sum(dim=(0, 2)) > 0


def test_token_conv_1d_sees_nine_consecutive_tokens():
    field = receptive_field(TokenConv1d(num_heads=2, kernel_size=9), 64, 8, 2, query=20)
    assert field.nonzero().flatten().tolist() == list(range(16, 25))


def test_grid_conv_2d_sees_a_square_neighbourhood():
    field = receptive_field(GridConv2d(dim=8, num_heads=2, kernel_size=3), 64, 8, 2, query=20)  # row 2, col 4
    rows_cols = {(i // 8, i % 8) for i in field.nonzero().flatten().tolist()}
    assert rows_cols == {(r, c) for r in (1, 2, 3) for c in (3, 4, 5)}


def test_changing_alpha_does_not_recompile_under_torch_compile():
    torch._dynamo.reset()
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    module = CastlingAttention(16, 2, alpha=1.0)
    compiled = torch.compile(module, backend=counting_backend)
    x = torch.randn(2, 16, 16)
    for alpha in (1.0, 0.7, 0.3):
        module.set_alpha(alpha)
        torch.testing.assert_close(compiled(x), module(x))
    assert len(graphs) == 1  # α is data, not a constant baked into the graph
    module.set_alpha(0.0)
    compiled(x)
    assert len(graphs) == 2  # switching the branch off is the one change that needs a new graph
    torch._dynamo.reset()
