const root = element.querySelector('.tl-root');
const scenesBox = root.querySelector('.tl-scenes');
const binBox = root.querySelector('.tl-bin');
const emptyBox = root.querySelector('.tl-empty');
const cards = new Map();      // shot id -> card element
const sceneEls = new Map();   // scene id -> scene element
let model = null;
let selected = new Set();
let dragId = null;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function button(action, label, title) {
  const b = el('button', 'tl-btn', label);
  b.type = 'button'; b.dataset.action = action; if (title) b.title = title;
  return b;
}
function payload(op, extra) {
  return Object.assign({op: op, version: model ? model.version : '', project_id: model ? model.project_id : null}, extra || {});
}
// Edits go to the server function `timeline_edit` (a direct request, no Gradio queue), one at a time per tab in
// click order; each answer carries the timeline as the services now have it, drawn at once. A payload may be a
// function, built when its turn comes, so quick clicks apply to the order the previous click left.
let chain = Promise.resolve();
const statusBox = root.querySelector('.tl-status');
function showStatus(message, ok) {
  statusBox.textContent = message || '';
  statusBox.classList.toggle('tl-refused', ok === false);
}
function send(op, extra) {
  chain = chain.then(async () => {
    const details = typeof extra === 'function' ? extra() : extra;
    if (details === null) return;
    const request = payload(op, details);
    request.selected = Array.from(selected);
    request.open_shot_id = model ? model.open_shot_id : null;
    try {
      const answer = await server.timeline_edit(request);
      if (answer && answer.model !== undefined) render(answer.model);
      if (op === 'caption') keepRefusedCaption(details, answer);
      showStatus(answer ? answer.message : '', answer ? answer.ok : false);
      // The open shot's panel (its number, takes, scene) follows the edit; its fields are left as typed.
      if (answer && answer.ok && model && model.open_shot_id != null) {
        trigger('select', {shot_id: null, selected: Array.from(selected), refresh_open: true});
      }
    } catch (error) {
      showStatus('The studio did not answer (' + error + '); reload the page.', false);
    }
  });
}
// A refused caption (changed in another tab meanwhile, too long, ...) stays in its box, marked, until it is saved or
// Escape puts the stored one back: the film-maker reads why and decides, nothing typed is thrown away.
function keepRefusedCaption(details, answer) {
  const card = cards.get(details.shot_id);
  if (!card) return;
  const box = card.querySelector('.tl-caption');
  const refused = !(answer && answer.ok);
  box.classList.toggle('tl-unsaved', refused);
  if (refused && document.activeElement !== box) box.value = details.caption;
}
function sendGenerate(op, extra) { trigger('generate', payload(op, extra)); }
function metaText(shot) {
  const parts = [];
  if (shot.characters.length) parts.push(shot.characters.join(', '));
  parts.push(shot.num_frames + ' f / ' + shot.seconds + ' s');
  if (shot.shot_size) parts.push(shot.shot_size);
  if (shot.camera_move) parts.push(shot.camera_move);
  parts.push(shot.transition === 'cut' ? 'cut' : shot.transition + ' ' + shot.transition_seconds + ' s');
  parts.push(shot.take_count + (shot.take_count === 1 ? ' take' : ' takes'));
  return parts.join(' · ');
}
function makeCard(shot) {
  const card = el('div', 'tl-card');
  card.draggable = true;  // switched off while the pointer is on a field, so text can be selected there
  const head = el('div', 'tl-card-head');
  const pick = el('input', 'tl-pick'); pick.type = 'checkbox'; pick.title = 'select for generation';
  head.append(pick, el('span', 'tl-index'), button('open', 'Takes', 'show this shot\u2019s takes and settings'));
  const caption = el('textarea', 'tl-caption');
  caption.rows = 3; caption.placeholder = 'caption of this shot';
  const actions = el('div', 'tl-actions');
  actions.append(button('left', '\u25c0', 'move earlier'), button('right', '\u25b6', 'move later'),
                 button('insert', '+', 'insert a shot after this one'), button('duplicate', 'Dup', 'duplicate'),
                 button('regenerate', 'Regen', 'regenerate this shot with a new seed'),
                 button('delete', 'Del', 'delete (to the bin)'));
  card.append(head, el('div', 'tl-thumb tl-thumb-empty', 'no take yet'), caption, el('div', 'tl-meta'),
              el('div', 'tl-drift'), el('div', 'tl-limits'), actions);
  return card;
}
function updateCard(card, shot, index) {
  card.dataset.shotId = shot.id;
  card.dataset.sceneId = shot.scene_id;
  card.dataset.savedCaption = shot.caption;
  card.querySelector('.tl-index').textContent = '#' + index;
  const caption = card.querySelector('.tl-caption');
  // Never replace what the user is typing: a focused field keeps its text until it is committed.
  if (document.activeElement !== caption && !caption.classList.contains('tl-unsaved') && caption.value !== shot.caption) caption.value = shot.caption;
  const meta = card.querySelector('.tl-meta'); const text = metaText(shot);
  if (meta.textContent !== text) meta.textContent = text;
  // The chosen take was made before the card changed (or is an older take): the film shows the take.
  const drift = card.querySelector('.tl-drift'); const driftText = shot.drift ? '\u26a0 ' + shot.drift : '';
  if (drift.textContent !== driftText) {
    drift.textContent = driftText;
    drift.title = shot.drift ? 'The film uses the chosen take as it was made: regenerate the shot or choose another take' : '';
  }
  // What the model cannot draw of what this caption asks (from its folder's record): a note, not a refusal.
  const limits = card.querySelector('.tl-limits'); const limitsText = shot.limits ? '\u24d8 ' + shot.limits : '';
  if (limits.textContent !== limitsText) limits.textContent = limitsText;
  const thumb = card.querySelector('.tl-thumb');
  if (shot.thumb) {
    if (thumb.tagName !== 'IMG' || thumb.getAttribute('src') !== shot.thumb) {
      const img = el('img', 'tl-thumb'); img.src = shot.thumb; img.alt = 'chosen take'; img.draggable = false;
      thumb.replaceWith(img);
    }
  } else if (thumb.tagName === 'IMG') {
    thumb.replaceWith(el('div', 'tl-thumb tl-thumb-empty', 'no take yet'));
  }
  const frame = card.querySelector('.tl-thumb');
  if (model.frame_aspect && frame.style.aspectRatio !== model.frame_aspect) frame.style.aspectRatio = model.frame_aspect;
  card.querySelector('.tl-pick').checked = selected.has(shot.id);
  card.classList.toggle('tl-selected', model.open_shot_id === shot.id);
  showBusy(card, shot);
}
// A card whose shot a queued or running job is generating says so (and which job), until the job ends.
function showBusy(card, shot) {
  let note = card.querySelector('.tl-busy-note');
  card.classList.toggle('tl-busy', !!shot.busy);
  if (!shot.busy) { if (note) note.remove(); return; }
  if (!note) { note = el('div', 'tl-busy-note'); card.querySelector('.tl-card-head').after(note); }
  const text = (shot.busy.status === 'running' ? 'generating…' : 'queued') + ' (job ' + shot.busy.job + ')';
  if (note.textContent !== text) note.textContent = text;
}
// Running time as the export will cut it: "4.2 s", or "1:05" from a minute on.
function runningTime(seconds) {
  if (seconds < 60) return seconds.toFixed(1) + ' s';
  const whole = Math.round(seconds);
  return Math.floor(whole / 60) + ':' + String(whole % 60).padStart(2, '0');
}
function showFilmTime() {
  let line = root.querySelector('.tl-film');
  if (!line) { line = el('div', 'tl-film'); line.append(el('span', 'tl-film-text')); scenesBox.before(line); }
  const shots = model.scenes.reduce((n, scene) => n + scene.shots.length, 0);
  line.querySelector('.tl-film-text').textContent = 'Film: ' + runningTime(model.running_s || 0) + ' · ' + model.scenes.length +
    (model.scenes.length === 1 ? ' scene' : ' scenes') + ' · ' + shots + (shots === 1 ? ' shot' : ' shots');
}
function makeScene(scene) {
  const box = el('div', 'tl-scene');
  const head = el('div', 'tl-scene-head');
  const caption = el('input', 'tl-scene-caption'); caption.type = 'text';
  caption.placeholder = 'scene caption: place, look, who is there';
  head.append(el('span', 'tl-scene-label'), caption,
              button('scene_left', '\u25b2', 'move the scene earlier'), button('scene_right', '\u25bc', 'move the scene later'),
              button('add_shot', '+ Shot', 'add a shot at the end'),
              button('generate_scene', 'Generate scene', 'generate every shot of this scene'),
              button('delete_scene', 'Delete scene', 'delete the scene (to the bin)'));
  box.append(head, el('div', 'tl-shots'));
  return box;
}
function render(value) {
  const renderStart = performance.now();
  model = value && value.scenes ? value : null;
  emptyBox.style.display = model ? 'none' : '';
  if (!model) { scenesBox.textContent = ''; binBox.textContent = ''; cards.clear(); sceneEls.clear(); root.dataset.version = ''; return; }
  selected = new Set((model.selected || []).filter(id => model.scenes.some(s => s.shots.some(x => x.id === id))));
  const liveShots = new Set(); const liveScenes = new Set();
  let index = 0;
  model.scenes.forEach((scene, sceneIndex) => {
    liveScenes.add(scene.id);
    let box = sceneEls.get(scene.id);
    if (!box) { box = makeScene(scene); sceneEls.set(scene.id, box); }
    box.dataset.sceneId = scene.id;
    box.querySelector('.tl-scene-label').textContent = 'Scene ' + (sceneIndex + 1) + ' \u00b7 ' + runningTime(scene.running_s || 0);
    const caption = box.querySelector('.tl-scene-caption');
    box.dataset.savedCaption = scene.caption;
    if (document.activeElement !== caption && caption.value !== scene.caption) caption.value = scene.caption;
    if (scenesBox.children[sceneIndex] !== box) scenesBox.insertBefore(box, scenesBox.children[sceneIndex] || null);
    const shotsBox = box.querySelector('.tl-shots');
    scene.shots.forEach((shot, shotIndex) => {
      index += 1; liveShots.add(shot.id);
      let card = cards.get(shot.id);
      if (!card) { card = makeCard(shot); cards.set(shot.id, card); }
      updateCard(card, shot, index);
      if (shotsBox.children[shotIndex] !== card) shotsBox.insertBefore(card, shotsBox.children[shotIndex] || null);
    });
  });
  for (const [id, card] of cards) if (!liveShots.has(id)) { card.remove(); cards.delete(id); }
  for (const [id, box] of sceneEls) if (!liveScenes.has(id)) { box.remove(); sceneEls.delete(id); }
  binBox.textContent = '';
  const binScenes = model.bin_scenes || [];
  if ((model.bin && model.bin.length) || binScenes.length) {
    binBox.append(el('span', 'tl-bin-label', 'Bin: '));
    for (const item of binScenes) {
      const entry = el('span', 'tl-bin-item tl-bin-scene'); entry.dataset.sceneId = item.id;
      const label = 'Scene: ' + (item.caption || '(no caption)') + ' (' + item.shot_count + ' shots)';
      entry.append(el('span', 'tl-bin-caption', label), button('restore_scene', 'Restore', 'put the scene back'));
      binBox.append(entry);
    }
    for (const item of model.bin) {
      const entry = el('span', 'tl-bin-item'); entry.dataset.shotId = item.id;
      entry.append(el('span', 'tl-bin-caption', item.caption || '(no caption)'), button('restore', 'Restore', 'put it back'));
      binBox.append(entry);
    }
    binBox.append(button('empty_bin', 'Empty bin', 'delete the bin\u2019s shots and their takes for good'));
  }
  showFilmTime();
  addPlayButtons();
  root.dataset.version = model.version;
  root.dataset.renderedAt = String(performance.now());
  root.dataset.renderMs = (performance.now() - renderStart).toFixed(2);
}

function cardOf(node) { return node && node.closest ? node.closest('.tl-card') : null; }
function sceneOf(node) { return node && node.closest ? node.closest('.tl-scene') : null; }
function shotIdOf(node) { const c = cardOf(node); return c ? Number(c.dataset.shotId) : null; }
function sceneIdOf(node) { const s = sceneOf(node); return s ? Number(s.dataset.sceneId) : null; }
function sceneOrder(sceneId) {
  const scene = model.scenes.find(s => s.id === sceneId);
  return scene ? scene.shots.map(s => s.id) : [];
}

root.addEventListener('click', (event) => {
  const target = event.target.closest('button[data-action]');
  if (!target || !model) return;
  const action = target.dataset.action;
  const shotId = shotIdOf(target); const sceneId = sceneIdOf(target);
  if (action === 'restore_scene') { send('restore_scene', {scene_id: Number(target.closest('.tl-bin-item').dataset.sceneId)}); return; }
  if (action === 'restore') { send('restore', {shot_id: Number(target.closest('.tl-bin-item').dataset.shotId)}); return; }
  if (action === 'empty_bin') { if (confirm('Delete the bin\u2019s shots and their takes for good?')) send('empty_bin', {}); return; }
  if (action === 'open') {
    // known here at once, so the next edit (a move right after opening) refreshes this shot's panel
    model.open_shot_id = shotId;
    root.querySelectorAll('.tl-card').forEach(c => c.classList.toggle('tl-selected', Number(c.dataset.shotId) === shotId));
    trigger('select', {shot_id: shotId, selected: Array.from(selected)});
    return;
  }
  if (action === 'left' || action === 'right') {
    send('move', () => {
      const scene = model.scenes.find(x => x.shots.some(y => y.id === shotId));
      if (!scene) return null;
      const from = scene.shots.findIndex(y => y.id === shotId);
      return {shot_id: shotId, to_scene_id: scene.id, position: from + (action === 'left' ? -1 : 1)};
    });
    return;
  }
  if (action === 'scene_left' || action === 'scene_right') {
    send('move_scene', () => {
      const from = model.scenes.findIndex(x => x.id === sceneId);
      if (from < 0) return null;
      return {scene_id: sceneId, position: from + (action === 'scene_left' ? -1 : 1)};
    });
    return;
  }
  if (action === 'generate_scene') { sendGenerate('generate_scene', {scene_id: sceneId}); return; }
  if (action === 'regenerate') { sendGenerate('regenerate', {shot_id: shotId, scene_id: sceneId}); return; }
  send(action, {shot_id: shotId, scene_id: sceneId});
});
root.addEventListener('change', (event) => {
  const target = event.target;
  if (!target.classList.contains('tl-pick')) return;
  const id = shotIdOf(target);
  if (target.checked) selected.add(id); else selected.delete(id);
  trigger('select', {shot_id: null, selected: Array.from(selected)});
});
// Captions are committed when the field loses focus (Enter blurs it): one save per edit, never per keystroke.
root.addEventListener('focusout', (event) => {
  const target = event.target;
  if (!model) return;
  if (target.classList.contains('tl-caption')) {
    const card = cardOf(target);
    if (target.value !== card.dataset.savedCaption) {
      // `was`: the caption this card showed, so an edit made meanwhile in another tab is not overwritten unseen
      send('caption', {shot_id: Number(card.dataset.shotId), caption: target.value, was: card.dataset.savedCaption});
    }
  } else if (target.classList.contains('tl-scene-caption')) {
    const scene = sceneOf(target);
    if (target.value !== scene.dataset.savedCaption) {
      send('scene_caption', {scene_id: Number(scene.dataset.sceneId), caption: target.value});
    }
  }
});
root.addEventListener('keydown', (event) => {
  const target = event.target;
  if (event.key === 'Enter' && !event.shiftKey && (target.classList.contains('tl-caption') || target.classList.contains('tl-scene-caption'))) {
    event.preventDefault();
    target.blur();  // focusout saves once
  } else if (event.key === 'Escape' && target.classList.contains('tl-caption')) {
    target.classList.remove('tl-unsaved'); target.value = cardOf(target).dataset.savedCaption; target.blur();
  }
});
root.addEventListener('pointerdown', (event) => {
  const card = cardOf(event.target);
  if (card) card.draggable = !event.target.closest('textarea, input, button, select');
});
root.addEventListener('dragstart', (event) => {
  const card = cardOf(event.target);
  if (!card || event.target.closest('textarea, input, button')) return;
  dragId = Number(card.dataset.shotId);
  event.dataTransfer.effectAllowed = 'move';
  event.dataTransfer.setData('text/plain', String(dragId));
});
function clearDropMarks() {
  root.querySelectorAll('.tl-drop-before, .tl-drop-after, .tl-drop-target').forEach(n => n.classList.remove('tl-drop-before', 'tl-drop-after', 'tl-drop-target'));
}
function dropPlace(event) {
  const card = cardOf(event.target); const sceneId = sceneIdOf(event.target);
  if (sceneId === null) return null;
  const order = sceneOrder(sceneId).filter(id => id !== dragId);
  if (!card) return {sceneId, position: order.length, card: null, after: true};
  const rect = card.getBoundingClientRect();
  const after = event.clientX > rect.left + rect.width / 2;
  const overId = Number(card.dataset.shotId);
  if (overId === dragId) return {sceneId, position: sceneOrder(sceneId).indexOf(dragId), card, after};
  return {sceneId, position: order.indexOf(overId) + (after ? 1 : 0), card, after};
}
root.addEventListener('dragover', (event) => {
  if (dragId === null) return;
  const place = dropPlace(event); if (!place) return;
  event.preventDefault(); event.dataTransfer.dropEffect = 'move';
  clearDropMarks();
  if (place.card) place.card.classList.add(place.after ? 'tl-drop-after' : 'tl-drop-before');
  else sceneEls.get(place.sceneId).querySelector('.tl-shots').classList.add('tl-drop-target');
});
root.addEventListener('dragleave', (event) => { if (event.target === root) clearDropMarks(); });
root.addEventListener('drop', (event) => {
  if (dragId === null) return;
  const place = dropPlace(event); clearDropMarks();
  if (!place) return;
  event.preventDefault();
  send('move', {shot_id: dragId, to_scene_id: place.sceneId, position: place.position});
  dragId = null;
});
root.addEventListener('dragend', () => { dragId = null; clearDropMarks(); });

// A value pushed by Python (project opened, timer tick during a job) older than what an edit answer drew is
// skipped: `stamp` grows with every timeline the server builds.
function renderPushed(value) {
  if (value && model && value.project_id === model.project_id && (value.stamp || 0) < (model.stamp || 0)) return;
  render(value);
}
renderPushed(props.value);
watch('value', () => renderPushed(props.value));
// One answer at a time: when the page's status line says something newer (a generation queued, a shot saved), an
// older message here (a red refusal most of all) goes, instead of standing above the timeline through later successes.
(function followPageStatus(tries) {
  const pageStatus = document.querySelector('#sl-status');
  if (!pageStatus) { if (tries > 0) setTimeout(() => followPageStatus(tries - 1), 250); return; }
  // Only a new stamped line ("Shot saved. · 14:02:31", as the server's `said` writes them) is news: Gradio's own
  // progress text comes and goes in the same element while a request runs, and must not clear this one.
  const stamped = text => { const m = (text || '').match(/[^\n]*·\s*\d\d:\d\d:\d\d/); return m ? m[0].trim() : ''; };
  let said = stamped(pageStatus.textContent);
  new MutationObserver(() => {
    const now = stamped(pageStatus.textContent);
    if (now && now !== said) showStatus('', true);
    if (now) said = now;
  }).observe(pageStatus, {childList: true, subtree: true, characterData: true});
})(40);
// The player: "Play scene" / "Play film" play the chosen takes in film order, each from its trims for as long as the
// export keeps it, with the cards' transitions (a dissolve blends the next take in over the last seconds of this one,
// a fade goes through black, a cut switches); a shot without a take shows a grey card for its length, as the
// export's grey card does.
const player = root.querySelector('.tl-player');
const screens = Array.from(player.querySelectorAll('.tl-video'));
const gap = player.querySelector('.tl-card-gap');
let playlist = [], playing = -1, playTimer = null, layer = 0;
function playItems(scenes) {
  let index = 0; const items = [];
  model.scenes.forEach(scene => scene.shots.forEach(shot => {
    index += 1;
    if (scenes.includes(scene.id)) items.push({number: index, shot_id: shot.id, video: shot.video, start: shot.trim_in_s,
      seconds: shot.used_s, transition: items.length ? shot.transition : 'cut', transition_s: shot.transition_seconds});
  }));
  return items;
}
function showOnly(node, seconds) {
  for (const other of [...screens, gap]) {
    if (other === node) continue;
    other.style.transition = 'opacity ' + seconds + 's'; other.style.opacity = '0';
    if (other.tagName === 'VIDEO' && seconds === 0) other.pause();
  }
  node.style.transition = 'opacity ' + seconds + 's'; node.style.opacity = '1';
}
function playShot(i) {
  clearTimeout(playTimer);
  if (i >= playlist.length) { stopPlaying(); return; }
  playing = i; const item = playlist[i]; const next = playlist[i + 1];
  player.dataset.playing = String(item.shot_id);
  player.querySelector('.tl-now').textContent = 'Shot #' + item.number + ' (' + (i + 1) + ' of ' + playlist.length + ')' + (item.video ? '' : ': no take yet');
  let node = gap;
  if (item.video) {
    layer = 1 - layer; node = screens[layer];
    if (node.getAttribute('src') !== item.video) node.src = item.video;
    try { node.currentTime = item.start || 0; } catch (e) { /* set once loaded */ }
    const started = node.play(); if (started && started.catch) started.catch(() => {});
  }
  const blend = item.transition === 'dissolve' ? item.transition_s : 0;
  if (item.transition === 'fade') { showOnly(gap, 0); gap.style.background = '#000'; setTimeout(() => showOnly(node, item.transition_s / 2), 0); }
  else { gap.style.background = ''; showOnly(node, blend); }
  // the next shot starts when this one ends, less the part a dissolve into it overlaps
  const overlap = next && next.transition === 'dissolve' ? next.transition_s : 0;
  playTimer = setTimeout(() => playShot(i + 1), Math.max(0.05, item.seconds - overlap) * 1000);
}
function startPlaying(sceneIds) {
  playlist = playItems(sceneIds);
  player.dataset.playlist = JSON.stringify(playlist.map(item => [item.shot_id, item.transition]));
  player.hidden = false;
  playShot(0);
}
function stopPlaying() {
  clearTimeout(playTimer); playing = -1; player.hidden = true; player.dataset.playing = '';
  screens.forEach(v => { v.pause(); v.style.opacity = '0'; }); gap.style.opacity = '0';
}
player.addEventListener('click', (event) => {
  const action = event.target.dataset.player;
  if (action === 'next') playShot(playing + 1);
  if (action === 'close') stopPlaying();
});
function addPlayButtons() {
  const film = root.querySelector('.tl-film');
  if (film && !film.querySelector('[data-play]')) {
    const b = el('button', 'tl-btn', '\u25b6 Play film'); b.type = 'button'; b.dataset.play = 'film'; film.append(' ', b);
  }
  for (const [id, box] of sceneEls) {
    const head = box.querySelector('.tl-scene-head');
    if (!head.querySelector('[data-play]')) {
      const b = el('button', 'tl-btn', '\u25b6 Play'); b.type = 'button'; b.dataset.play = 'scene'; b.title = 'play this scene\u2019s takes with their transitions';
      head.querySelector('.tl-scene-label').after(b);
    }
  }
}
root.addEventListener('click', (event) => {
  const b = event.target.closest('[data-play]');
  if (!b || !model) return;
  startPlaying(b.dataset.play === 'film' ? model.scenes.map(s => s.id) : [sceneIdOf(b)]);
});
