"""The Characters tab: the character cards, one character's fields, its reference pictures and their captions,
adapter training with its live loss curve, and how well recent takes keep the character's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.services.errors import ServiceError
from studio.ui.character_view import character_outputs
from studio.ui.common import Shared, guarded, require_project, said, upload_path
from studio.ui.panels import PANEL_CSS, PICKED_REFERENCE_CAPTION_JS, ActionPanel, esc

# "Delete character" asks first: its references and trained adapters go for good (the services keep no bin of them).
CONFIRM_DELETE_CHARACTER_JS = """(projectId, characterId, answer) => {
    const box = document.querySelector('#sl-char-name textarea, #sl-char-name input');
    const name = (box && box.value) || 'this character';
    const sure = confirm(`Delete ${name} for good, with its reference pictures and trained adapters?`);
    return [projectId, characterId, sure ? 'yes' : 'no'];
}"""


@dataclass
class CharactersTab:
    characters_panel: ActionPanel
    char_new_name: gr.Textbox
    char_new_description: gr.Textbox
    char_create_button: gr.Button
    character_group: gr.Group
    character_title: gr.Markdown
    char_name: gr.Textbox
    char_trigger: gr.Textbox
    char_description: gr.Textbox
    char_save_button: gr.Button
    char_delete_button: gr.Button
    ref_upload: gr.File
    references_panel: ActionPanel
    ref_choice: gr.Dropdown
    ref_caption: gr.Textbox
    ref_caption_button: gr.Button
    adapter_kind: gr.Radio
    train_button: gr.Button
    adapter_status: gr.HTML
    loss_plot: gr.LinePlot
    identity_table: gr.Dataframe


def build_characters_tab() -> CharactersTab:
    with gr.Tab("Characters", id="characters"):
        characters_panel = ActionPanel("", elem_id="sl-characters")
        with gr.Row():
            char_new_name = gr.Textbox(label="New character name", elem_id="sl-char-new-name")
            char_new_description = gr.Textbox(label="Description", elem_id="sl-char-new-description")
            char_create_button = gr.Button("Add character", elem_id="sl-char-create")
        with gr.Group(visible=False) as character_group:
            character_title = gr.Markdown("", elem_id="sl-char-title")
            with gr.Row():
                char_name = gr.Textbox(label="Name", elem_id="sl-char-name")
                char_trigger = gr.Textbox(label="Trigger token", elem_id="sl-char-trigger")
                char_description = gr.Textbox(label="Description", elem_id="sl-char-description")
            with gr.Row():
                char_save_button = gr.Button("Save character", elem_id="sl-char-save")
                char_delete_button = gr.Button("Delete character", variant="stop", elem_id="sl-char-delete")
            ref_upload = gr.File(
                label="Upload references (several at once)",
                file_count="multiple",
                file_types=["image"],
                elem_id="sl-ref-upload",
            )
            references_panel = ActionPanel("", elem_id="sl-references")
            with gr.Row():  # what each picture shows, naming the character by its trigger
                ref_choice = gr.Dropdown(choices=[], value=None, label="Reference", scale=1, elem_id="sl-ref-choice")
                ref_caption = gr.Textbox(label="Reference caption", scale=3, elem_id="sl-ref-caption")
                ref_caption_button = gr.Button("Save caption", scale=1, elem_id="sl-ref-caption-save")
            with gr.Row():
                adapter_kind = gr.Radio(
                    ["lora", "embedding"], value="lora", label="Adapter", elem_id="sl-adapter-kind"
                )
                train_button = gr.Button("Train", variant="primary", elem_id="sl-train")
            adapter_status = gr.HTML("", elem_id="sl-adapter-status", css_template=PANEL_CSS)
            loss_plot = gr.LinePlot(x="step", y="loss", title="Training loss", height=220, elem_id="sl-loss-plot")
            identity_table = gr.Dataframe(
                headers=["shot", "take", "score"],
                label="Identity of recent takes",
                interactive=False,
                elem_id="sl-identity",
            )
    return CharactersTab(
        characters_panel,
        char_new_name,
        char_new_description,
        char_create_button,
        character_group,
        character_title,
        char_name,
        char_trigger,
        char_description,
        char_save_button,
        char_delete_button,
        ref_upload,
        references_panel,
        ref_choice,
        ref_caption,
        ref_caption_button,
        adapter_kind,
        train_button,
        adapter_status,
        loss_plot,
        identity_table,
    )


def character_outputs_list(tab: CharactersTab, shared: Shared, shot_characters: gr.CheckboxGroup) -> list[Any]:
    """The components `character_outputs` fills, in its order (the shot panel's character boxes among them)."""
    return [
        shared.character_state,
        tab.characters_panel,
        tab.character_group,
        tab.character_title,
        tab.char_name,
        tab.char_trigger,
        tab.char_description,
        tab.references_panel,
        tab.adapter_status,
        tab.train_button,
        tab.loss_plot,
        tab.identity_table,
        shot_characters,
        tab.ref_choice,
        tab.ref_caption,
    ]


def wire_characters(services: Any, shared: Shared, tab: CharactersTab, shot_characters: gr.CheckboxGroup) -> None:
    """Add, open, edit and delete characters; upload, caption and remove references; train adapters."""
    s = services
    project_state, character_state = shared.project_state, shared.character_state
    status, timer = shared.status, shared.timer
    outputs = character_outputs_list(tab, shared, shot_characters)

    @guarded
    def on_create_character(project_id, name, description):
        project_id = require_project(project_id)
        character = s.characters.create(project_id, name, description=description or "")
        message = f"{esc(character.name)} added (trigger {esc(character.trigger)}): upload references below."
        return (*character_outputs(s, project_id, character.id), said(message), "", "")

    @guarded
    def on_character_action(project_id, evt: gr.EventData):
        data = evt._data or {}
        if data.get("action") != "open_character":
            raise gr.Error("Unknown action; reload the page.", print_exception=False)
        return character_outputs(s, require_project(project_id), int(data["id"]))

    @guarded
    def on_save_character(project_id, character_id, name, trigger, description):
        s.characters.update(int(character_id), name=name, trigger=trigger, description=description)
        return character_outputs(s, project_id, character_id)

    @guarded
    def on_delete_character(project_id, character_id, answer: str = "yes"):
        if answer == "no":  # the browser asked first (`CONFIRM_DELETE_CHARACTER_JS`) and was told no
            return gr.skip()
        character = s.characters.get(int(character_id))
        s.characters.delete(character.id)
        return (*character_outputs(s, project_id, None), said(f"{esc(character.name)} deleted."))

    @guarded
    def on_upload_references(project_id, character_id, files):
        if character_id is None:
            raise gr.Error("Open a character first.", print_exception=False)
        from studio.characters.references import analyze_reference

        added, refused, notes = 0, [], set()
        for item in files or []:
            path = upload_path(item)
            try:
                # Stores the validated image, then finds its face; without the face models the reference is
                # kept unanalysed and the message says where the models go.
                data = path.read_bytes()
                reference = s.characters.add_reference(int(character_id), path.name, data)
                result = analyze_reference(s, reference.id, data=data)
                added += 1
                if result.analysis is None and result.message:
                    notes.add(result.message)
            except ServiceError as error:  # most refusals name the file already
                refused.append(str(error) if str(error).startswith(path.name) else f"{path.name}: {error}")
        message = f"Added {added} reference(s)."
        if refused:
            message += " Refused: " + "; ".join(refused) + "."
        if notes:  # a sentence each ("face models not found: ...")
            message += " " + " ".join(note[:1].upper() + note[1:].rstrip(".") + "." for note in sorted(notes))
        return (*character_outputs(s, project_id, character_id), None, said(esc(message)))

    @guarded
    def on_save_reference_caption(project_id, character_id, reference_id, caption):
        message = save_reference_caption(s, character_id, reference_id, caption)
        return (*character_outputs(s, project_id, character_id, reference_id), said(esc(message)))

    @guarded
    def on_train(project_id, character_id, kind):
        if character_id is None:
            raise gr.Error("Open a character first.", print_exception=False)
        from studio.characters.adapters import request_training

        require_project(project_id)
        job = request_training(s, int(character_id), kind)  # the one already queued or running, if any
        from studio.characters.adapters import training_estimate

        message = (
            f"Training queued (job {job.id}): {training_estimate(s, job).sentence(first=False)}."
            if job.status == "queued"
            else (f"Already training (job {job.id}); a new version can be trained once it ends.")
        )
        return (*character_outputs(s, project_id, character_id), gr.update(active=True), said(message))

    tab.char_create_button.click(
        on_create_character,
        [project_state, tab.char_new_name, tab.char_new_description],
        [*outputs, status, tab.char_new_name, tab.char_new_description],  # the "new" fields empty
    )
    tab.characters_panel.action(on_character_action, project_state, outputs)

    @guarded
    def on_reference_action(project_id, character_id, evt: gr.EventData):
        data = evt._data or {}
        if data.get("action") != "remove_reference":
            raise gr.Error("Unknown action; reload the page.", print_exception=False)
        picked = _picked_reference(s, character_id, data.get("id"))
        s.characters.delete_reference(picked.id)
        name = picked.original_name or "the reference"
        return (*character_outputs(s, project_id, character_id), said(esc(f"{name} removed.")))

    tab.references_panel.action(on_reference_action, [project_state, character_state], [*outputs, status])
    tab.char_save_button.click(
        on_save_character,
        [project_state, character_state, tab.char_name, tab.char_trigger, tab.char_description],
        outputs,
    )
    delete_answer = gr.Textbox(visible="hidden", elem_id="sl-char-delete-answer")  # "yes" or "no", from the browser
    tab.char_delete_button.click(
        on_delete_character,
        [project_state, character_state, delete_answer],
        [*outputs, status],
        js=CONFIRM_DELETE_CHARACTER_JS,
    )
    tab.ref_upload.upload(
        on_upload_references,
        [project_state, character_state, tab.ref_upload],
        [*outputs, tab.ref_upload, status],
    )
    tab.ref_choice.input(None, tab.ref_choice, tab.ref_caption, js=PICKED_REFERENCE_CAPTION_JS)  # no round trip
    tab.ref_caption_button.click(
        on_save_reference_caption,
        [project_state, character_state, tab.ref_choice, tab.ref_caption],
        [*outputs, status],
    )
    tab.train_button.click(on_train, [project_state, character_state, tab.adapter_kind], [*outputs, timer, status])


def _picked_reference(services: Any, character_id: Any, reference_id: Any) -> Any:
    if character_id is None:
        raise gr.Error("Open a character first.", print_exception=False)
    if reference_id is None or reference_id == "":
        raise gr.Error("Pick the reference to caption first.", print_exception=False)
    picked = services.characters.get_reference(int(reference_id))  # gone: NotFoundError, shown by `guarded`
    if picked.character_id != int(character_id):
        raise gr.Error("That reference is no longer this character's; reload the page.", print_exception=False)
    return picked


def save_reference_caption(services: Any, character_id: Any, reference_id: Any, caption: str | None) -> str:
    """The character panel's "Save caption": one service call; a caption that does not name the character's
    trigger is refused by the service (`guarded` shows its message). Returns the status line."""
    picked = _picked_reference(services, character_id, reference_id)
    view = services.characters.set_reference_caption(picked.id, caption or "")
    name = view.original_name or f"reference {view.id}"
    if not view.caption:
        return f"Caption of {name} cleared: it trains on the trigger and description."
    return f"Caption of {name} saved."
