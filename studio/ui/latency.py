"""In-page edit latency probes, shared by bench/ui_latency.py and the browser tests.

Each probe runs inside the page: it starts the clock (`performance.now()`), performs the user's action on the
timeline (commit a caption, click a move button) and stops the clock when the timeline shows the server's answer
(the card's saved caption, or the new structure version). So a number is "action to page updated", without
Playwright's own round trips.
"""

from __future__ import annotations

CAPTION_EDIT_JS = """
async ([shotId, text]) => {
  const card = document.querySelector(`.tl-card[data-shot-id="${shotId}"]`);
  const field = card.querySelector('.tl-caption');
  field.focus(); field.value = text;
  const done = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      const now = document.querySelector(`.tl-card[data-shot-id="${shotId}"]`);
      if (now && now.dataset.savedCaption === text) { observer.disconnect(); resolve(performance.now()); }
    });
    setTimeout(() => resolve(NaN), 10000);
    observer.observe(document.querySelector('.tl-root'), {attributes: true, subtree: true,
                                                         attributeFilter: ['data-saved-caption']});
  });
  const start = performance.now();
  field.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
  return (await done) - start;
}
"""

MOVE_JS = """
async ([shotId, direction]) => {
  const root = document.querySelector('.tl-root');
  const before = root.dataset.version;
  const button = document.querySelector(`.tl-card[data-shot-id="${shotId}"] button[data-action="${direction}"]`);
  const done = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (root.dataset.version !== before) { observer.disconnect(); resolve(performance.now()); }
    });
    setTimeout(() => resolve(NaN), 10000);
    observer.observe(root, {attributes: true, attributeFilter: ['data-version']});
  });
  const start = performance.now();
  button.click();
  return (await done) - start;
}
"""

DRAG_JS = """
async ([shotId, overId, after]) => {
  const root = document.querySelector('.tl-root');
  const before = root.dataset.version;
  const source = document.querySelector(`.tl-card[data-shot-id="${shotId}"]`);
  const target = document.querySelector(`.tl-card[data-shot-id="${overId}"]`);
  const rect = target.getBoundingClientRect();
  const point = {clientX: after ? rect.right - 4 : rect.left + 4, clientY: rect.top + rect.height / 2, bubbles: true};
  const data = new DataTransfer();
  const done = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (root.dataset.version !== before) { observer.disconnect(); resolve(performance.now()); }
    });
    observer.observe(root, {attributes: true, attributeFilter: ['data-version']});
    setTimeout(() => resolve(NaN), 10000);
  });
  source.dispatchEvent(new DragEvent('dragstart', {...point, dataTransfer: data}));
  target.dispatchEvent(new DragEvent('dragover', {...point, dataTransfer: data, cancelable: true}));
  const start = performance.now();
  target.dispatchEvent(new DragEvent('drop', {...point, dataTransfer: data, cancelable: true}));
  source.dispatchEvent(new DragEvent('dragend', {...point, dataTransfer: data}));
  return (await done) - start;
}
"""


def card_order(page) -> list[int]:
    return page.eval_on_selector_all(".tl-card", "nodes => nodes.map(n => Number(n.dataset.shotId))")


def measure_caption_edit(page, shot_id: int, text: str) -> float:
    """Milliseconds from committing `text` (Enter) in the shot's caption to the page showing it saved."""
    return _checked(page.evaluate(CAPTION_EDIT_JS, [shot_id, text]), "caption edit")


def measure_move(page, shot_id: int, direction: str = "right") -> float:
    """Milliseconds from clicking the shot's move button to the timeline redrawn in the new order."""
    return _checked(page.evaluate(MOVE_JS, [shot_id, direction]), "move")


def measure_drag(page, shot_id: int, over_id: int, after: bool = True) -> float:
    """Milliseconds from dropping a dragged card on another card (HTML5 drag events) to the timeline redrawn."""
    return _checked(page.evaluate(DRAG_JS, [shot_id, over_id, after]), "drag and drop")


def _checked(value: float | None, what: str) -> float:
    if value is None or value != value:  # NaN: the page never showed the answer
        raise TimeoutError(f"the page did not show the {what} within 10 s")
    return float(value)


def last_render_ms(page) -> float:
    """How long the timeline's last redraw took in the browser (set by timeline.js)."""
    return float(page.eval_on_selector(".tl-root", "root => Number(root.dataset.renderMs || 'NaN')"))
