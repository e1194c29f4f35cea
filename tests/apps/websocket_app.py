"""A FastAPI app for the WebSocket session tests (``tests/test_websockets.py``),
served by uvicorn-worker's ``UvicornWorker`` and by gunicorn's own ASGI
worker.

- ``/ws/{room}``: accepts, then answers each text message ``room:text``
  until the client closes; the message ``close`` makes the app close the
  session itself, ``raise`` makes it raise;
- ``/refuse``: closes before accepting (the server answers 403: no session);
- ``/refuse-raise``: raises before accepting (the server answers 500);
- ``/items/{item_id}``: an HTTP request, to show requests are still counted.
"""

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "close":
                await websocket.close()
                return
            if text == "raise":
                raise RuntimeError("fails in the middle of a WebSocket session")
            await websocket.send_text(f"{room}:{text}")
    except WebSocketDisconnect:
        return


@app.websocket("/refuse")
async def refuse(websocket: WebSocket):
    await websocket.close(code=1008)


@app.websocket("/refuse-raise")
async def refuse_raise(websocket: WebSocket):
    raise RuntimeError("fails before accepting")


@app.get("/items/{item_id}")
async def read_item(item_id: int):
    return {"item_id": item_id}
